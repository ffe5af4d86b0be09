"""The Segment Spec as methods: ``request.segment.ecommerce`` and ``request.segment.b2b``.

One method per event of Segment's E-commerce Spec v2 and B2B SaaS Spec, named after the
event in snake_case, its spec properties as keyword arguments (typed, so IDEs and mypy
see them) and any further keyword as a custom property. Everything about an event comes
from its row in :mod:`.spec_events`: the methods below are generated from that table
(``scripts/spec_methods.py``; a test regenerates them and compares), and the checks at
the call read it too.

At the call: the event's identifying property (``order_id``, ``product_id``...) must be
given and not empty; every spec property given must have the spec's type (numbers for
prices and quantities, a list of product objects for ``products``); ``Decimal``,
``datetime``, ``date``, ``UUID``, ``Enum`` and sets become JSON. A mistake raises
``TypeError``/``ValueError`` naming the method and the field, in the view that made it.
"""

from __future__ import annotations

import datetime as _dt
import enum
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .spec_events import B2B as B2B_EVENTS
from .spec_events import ECOMMERCE as ECOMMERCE_EVENTS
from .spec_events import PRODUCT, SpecEvent

if TYPE_CHECKING:
    from .tracker import Tracker

__all__ = ["B2B", "SPEC_EVENTS", "Ecommerce"]

#: Every spec event by its event name (the sender fills DEFAULT_CURRENCY from it).
SPEC_EVENTS: dict[str, SpecEvent] = {e.event: e for e in (*ECOMMERCE_EVENTS, *B2B_EVENTS)}
_BY_METHOD: dict[str, SpecEvent] = {e.method: e for e in (*ECOMMERCE_EVENTS, *B2B_EVENTS)}
_PRODUCT_FIELDS = {p.name: p for p in PRODUCT}
_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "True or False",
    "array": "a list",
    "object": "a dict",
    "products": "a list of product dicts",
    "date": "a datetime, a date or an ISO 8601 string",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


#: The spec's types, as checks of a given value (an int id is a string too).
_TYPE_OK: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, (str, uuid.UUID, enum.Enum)) or type(v) is int,
    "number": _is_number,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, (list, tuple, set, frozenset)),
    "object": lambda v: isinstance(v, Mapping),
    "products": lambda v: isinstance(v, (list, tuple)),
    "date": lambda v: isinstance(v, (_dt.date, str)),
}
#: Each method's property name -> spec type.
_TYPES: dict[str, dict[str, str]] = {m: {p.name: p.type for p in e.properties} for m, e in _BY_METHOD.items()}


def _checked(call: str, name: str, kind: str, value: Any) -> Any:
    """``value`` if it has the spec type ``kind`` (an int id becomes a string); raises naming
    the call and the field."""
    if not _TYPE_OK[kind](value):
        raise TypeError(f"{call}: {name} must be {_TYPE_NAMES[kind]}, got {type(value).__name__}")
    if kind == "string" and type(value) is int:
        return str(value)
    if kind == "products":
        return [_product(call, f"{name}[{i}]", item) for i, item in enumerate(value)]
    return value


def _product(call: str, name: str, item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise TypeError(f"{call}: {name} must be a product dict, got {type(item).__name__}")
    product = dict(item)
    for key, value in item.items():
        field = _PRODUCT_FIELDS.get(key)
        if field is not None and value is not None:
            product[key] = _checked(call, f"{name}.{key}", field.type, value)
    return product


class SpecCalls:
    """What the generated methods share: the checks, then one ``track`` on the tracker."""

    __slots__ = ("_tracker",)

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker

    def _send(
        self,
        method: str,
        given: Mapping[str, Any],
        custom: Mapping[str, Any],
        group_id: Any = None,
    ) -> None:
        spec = _BY_METHOD[method]
        types = _TYPES[method]
        call = f"{method}()"
        properties: dict[str, Any] = {}
        for name, value in given.items():
            if value is not None:
                properties[name] = _checked(call, name, types[name], value)
        for name in spec.identifying:
            value = properties.get(name)
            if value is None or value == "" or value == []:
                raise ValueError(f"{call}: {name} is required (the event's identifying property)")
        for name, value in custom.items():
            if value is not None:
                properties[name] = value
        options: dict[str, Any] = {}
        if group_id is not None:
            options["context"] = {"groupId": _checked(call, "group_id", "string", group_id)}
        self._tracker.track(spec.event, properties, **options)


# ---- generated by scripts/spec_methods.py from spec_events.py: do not edit by hand ----


class Ecommerce(SpecCalls):
    """Segment's E-commerce Spec v2: ``request.segment.ecommerce``."""

    __slots__ = ()

    def products_searched(
        self,
        query: str | int,
        **properties: Any,
    ) -> None:
        """Products Searched (Browsing).

        Required: query.
        query: Query the user searched with (the spec allows String or Object)
        Further keywords are custom properties.
        """
        self._send("products_searched", {"query": query}, properties)

    def product_list_viewed(
        self,
        list_id: str | int,
        *,
        category: str | int | None = None,
        products: Sequence[Mapping[str, Any]] | None = None,
        **properties: Any,
    ) -> None:
        """Product List Viewed (Browsing).

        Required: list_id.
        list_id: Product list being viewed
        category: Product category being viewed
        products: Products displayed in the product list
        Further keywords are custom properties.
        """
        self._send(
            "product_list_viewed",
            {"list_id": list_id, "category": category, "products": products},
            properties,
        )

    def product_list_filtered(
        self,
        list_id: str | int,
        *,
        category: str | int | None = None,
        filters: Sequence[Any] | None = None,
        sorts: Sequence[Any] | None = None,
        products: Sequence[Mapping[str, Any]] | None = None,
        **properties: Any,
    ) -> None:
        """Product List Filtered (Browsing).

        Required: list_id.
        list_id: Product list being viewed
        category: Product category being viewed
        filters: Product filters that the customer is using (objects of type, value)
        sorts: Product sorting that the customer is using (objects of type, value)
        products: Products displayed in the product list
        Further keywords are custom properties.
        """
        self._send(
            "product_list_filtered",
            {
                "list_id": list_id,
                "category": category,
                "filters": filters,
                "sorts": sorts,
                "products": products,
            },
            properties,
        )

    def promotion_viewed(
        self,
        promotion_id: str | int,
        *,
        creative: str | int | None = None,
        name: str | int | None = None,
        position: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Promotion Viewed (Promotions).

        Required: promotion_id.
        promotion_id: Promotion's ID
        creative: Promotion's creative
        name: Promotion's name
        position: Promotion's position
        Further keywords are custom properties.
        """
        self._send(
            "promotion_viewed",
            {"promotion_id": promotion_id, "creative": creative, "name": name, "position": position},
            properties,
        )

    def promotion_clicked(
        self,
        promotion_id: str | int,
        *,
        creative: str | int | None = None,
        name: str | int | None = None,
        position: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Promotion Clicked (Promotions).

        Required: promotion_id.
        promotion_id: Promotion's ID
        creative: Promotion's creative
        name: Promotion's name
        position: Promotion's position
        Further keywords are custom properties.
        """
        self._send(
            "promotion_clicked",
            {"promotion_id": promotion_id, "creative": creative, "name": name, "position": position},
            properties,
        )

    def product_clicked(
        self,
        product_id: str | int,
        *,
        sku: str | int | None = None,
        category: str | int | None = None,
        name: str | int | None = None,
        brand: str | int | None = None,
        variant: str | int | None = None,
        price: float | Decimal | None = None,
        quantity: float | Decimal | None = None,
        coupon: str | int | None = None,
        position: float | Decimal | None = None,
        url: str | int | None = None,
        image_url: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Product Clicked (Ordering).

        Required: product_id.
        product_id: Database id of the product
        sku: Sku of the product
        category: Product category
        name: Name of the product
        brand: Brand associated with the product
        variant: Variant of the product
        price: Price ($) of the product
        quantity: Quantity of a product
        coupon: Coupon code associated with a product (for example, MAY_DEALS_3)
        position: Position in the product list (ex. 3)
        url: URL of the product page
        image_url: Image url of the product
        Further keywords are custom properties.
        """
        self._send(
            "product_clicked",
            {
                "product_id": product_id,
                "sku": sku,
                "category": category,
                "name": name,
                "brand": brand,
                "variant": variant,
                "price": price,
                "quantity": quantity,
                "coupon": coupon,
                "position": position,
                "url": url,
                "image_url": image_url,
            },
            properties,
        )

    def product_viewed(
        self,
        product_id: str | int,
        *,
        sku: str | int | None = None,
        category: str | int | None = None,
        name: str | int | None = None,
        brand: str | int | None = None,
        variant: str | int | None = None,
        price: float | Decimal | None = None,
        quantity: float | Decimal | None = None,
        coupon: str | int | None = None,
        currency: str | int | None = None,
        position: float | Decimal | None = None,
        value: float | Decimal | None = None,
        url: str | int | None = None,
        image_url: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Product Viewed (Ordering).

        Required: product_id.
        product_id: Database id of the product
        sku: Sku of the product
        category: Product category
        name: Name of the product
        brand: Brand associated with the product
        variant: Variant of the product
        price: Price ($) of the product
        quantity: Quantity of a product
        coupon: Coupon code associated with a product (for example, MAY_DEALS_3)
        currency: Currency code associated with the transaction
        position: Position in the product list (ex. 3)
        value: Total value of the product after quantity
        url: URL of the product page
        image_url: Image url of the product
        Further keywords are custom properties.
        """
        self._send(
            "product_viewed",
            {
                "product_id": product_id,
                "sku": sku,
                "category": category,
                "name": name,
                "brand": brand,
                "variant": variant,
                "price": price,
                "quantity": quantity,
                "coupon": coupon,
                "currency": currency,
                "position": position,
                "value": value,
                "url": url,
                "image_url": image_url,
            },
            properties,
        )

    def product_added(
        self,
        product_id: str | int,
        *,
        cart_id: str | int | None = None,
        sku: str | int | None = None,
        category: str | int | None = None,
        name: str | int | None = None,
        brand: str | int | None = None,
        variant: str | int | None = None,
        price: float | Decimal | None = None,
        quantity: float | Decimal | None = None,
        coupon: str | int | None = None,
        position: float | Decimal | None = None,
        url: str | int | None = None,
        image_url: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Product Added (Ordering).

        Required: product_id.
        cart_id: Cart ID to which the product was added to
        product_id: Database id of the product
        sku: Sku of the product
        category: Product category
        name: Name of the product
        brand: Brand associated with the product
        variant: Variant of the product
        price: Price ($) of the product
        quantity: Quantity of a product
        coupon: Coupon code associated with a product (for example, MAY_DEALS_3)
        position: Position in the product list (ex. 3)
        url: URL of the product page
        image_url: Image url of the product
        Further keywords are custom properties.
        """
        self._send(
            "product_added",
            {
                "cart_id": cart_id,
                "product_id": product_id,
                "sku": sku,
                "category": category,
                "name": name,
                "brand": brand,
                "variant": variant,
                "price": price,
                "quantity": quantity,
                "coupon": coupon,
                "position": position,
                "url": url,
                "image_url": image_url,
            },
            properties,
        )

    def product_removed(
        self,
        product_id: str | int,
        *,
        cart_id: str | int | None = None,
        sku: str | int | None = None,
        category: str | int | None = None,
        name: str | int | None = None,
        brand: str | int | None = None,
        variant: str | int | None = None,
        price: float | Decimal | None = None,
        quantity: float | Decimal | None = None,
        coupon: str | int | None = None,
        position: float | Decimal | None = None,
        url: str | int | None = None,
        image_url: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Product Removed (Ordering).

        Required: product_id.
        cart_id: Cart ID to which the product was removed from
        product_id: Database id of the product
        sku: Sku of the product
        category: Product category
        name: Name of the product
        brand: Brand associated with the product
        variant: Variant of the product
        price: Price ($) of the product
        quantity: Quantity of a product
        coupon: Coupon code associated with a product (for example, MAY_DEALS_3)
        position: Position in the product list (ex. 3)
        url: URL of the product page
        image_url: Image url of the product
        Further keywords are custom properties.
        """
        self._send(
            "product_removed",
            {
                "cart_id": cart_id,
                "product_id": product_id,
                "sku": sku,
                "category": category,
                "name": name,
                "brand": brand,
                "variant": variant,
                "price": price,
                "quantity": quantity,
                "coupon": coupon,
                "position": position,
                "url": url,
                "image_url": image_url,
            },
            properties,
        )

    def cart_viewed(
        self,
        cart_id: str | int,
        *,
        products: Sequence[Mapping[str, Any]] | None = None,
        **properties: Any,
    ) -> None:
        """Cart Viewed (Ordering).

        Required: cart_id.
        cart_id: Shopping cart ID
        products: Products displayed in the product list
        Further keywords are custom properties.
        """
        self._send("cart_viewed", {"cart_id": cart_id, "products": products}, properties)

    def checkout_started(
        self,
        order_id: str | int,
        *,
        affiliation: str | int | None = None,
        value: float | Decimal | None = None,
        revenue: float | Decimal | None = None,
        shipping: float | Decimal | None = None,
        tax: float | Decimal | None = None,
        discount: float | Decimal | None = None,
        coupon: str | int | None = None,
        currency: str | int | None = None,
        products: Sequence[Mapping[str, Any]] | None = None,
        **properties: Any,
    ) -> None:
        """Checkout Started (Ordering).

        Required: order_id.
        order_id: Order/transaction ID
        affiliation: Store or affiliation from which this transaction occurred (e.g. Google Store)
        value: Revenue ($) with discounts and coupons added in
        revenue: Revenue ($) associated with the transaction (excluding shipping and tax)
        shipping: Shipping cost associated with the transaction
        tax: Total tax associated with the transaction
        discount: Total discount associated with the transaction
        coupon: Transaction coupon redeemed with the transaction
        currency: Currency code associated with the transaction
        products: Products in the order
        Further keywords are custom properties.
        """
        self._send(
            "checkout_started",
            {
                "order_id": order_id,
                "affiliation": affiliation,
                "value": value,
                "revenue": revenue,
                "shipping": shipping,
                "tax": tax,
                "discount": discount,
                "coupon": coupon,
                "currency": currency,
                "products": products,
            },
            properties,
        )

    def checkout_step_viewed(
        self,
        step: float | Decimal,
        *,
        checkout_id: str | int | None = None,
        shipping_method: str | int | None = None,
        payment_method: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Checkout Step Viewed (Ordering).

        Required: step.
        checkout_id: Checkout transaction ID
        step: Number representing a step in the checkout process
        shipping_method: String representing the shipping the method chosen
        payment_method: String representing the payment method chosen
        Further keywords are custom properties.
        """
        self._send(
            "checkout_step_viewed",
            {
                "checkout_id": checkout_id,
                "step": step,
                "shipping_method": shipping_method,
                "payment_method": payment_method,
            },
            properties,
        )

    def checkout_step_completed(
        self,
        step: float | Decimal,
        *,
        checkout_id: str | int | None = None,
        shipping_method: str | int | None = None,
        payment_method: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Checkout Step Completed (Ordering).

        Required: step.
        checkout_id: Checkout transaction ID
        step: Number representing a step in the checkout process
        shipping_method: String representing the shipping the method chosen
        payment_method: String representing the payment method chosen
        Further keywords are custom properties.
        """
        self._send(
            "checkout_step_completed",
            {
                "checkout_id": checkout_id,
                "step": step,
                "shipping_method": shipping_method,
                "payment_method": payment_method,
            },
            properties,
        )

    def payment_info_entered(
        self,
        checkout_id: str | int,
        *,
        order_id: str | int | None = None,
        step: float | Decimal | None = None,
        shipping_method: str | int | None = None,
        payment_method: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Payment Info Entered (Ordering).

        Required: checkout_id.
        checkout_id: Checkout transaction ID
        order_id: Order ID (optional)
        step: Number representing a step in the checkout process
        shipping_method: String representing the shipping the method chosen
        payment_method: String representing the payment method chosen
        Further keywords are custom properties.
        """
        self._send(
            "payment_info_entered",
            {
                "checkout_id": checkout_id,
                "order_id": order_id,
                "step": step,
                "shipping_method": shipping_method,
                "payment_method": payment_method,
            },
            properties,
        )

    def order_updated(
        self,
        order_id: str | int,
        *,
        affiliation: str | int | None = None,
        total: float | Decimal | None = None,
        revenue: float | Decimal | None = None,
        shipping: float | Decimal | None = None,
        tax: float | Decimal | None = None,
        discount: float | Decimal | None = None,
        coupon: str | int | None = None,
        currency: str | int | None = None,
        products: Sequence[Mapping[str, Any]] | None = None,
        **properties: Any,
    ) -> None:
        """Order Updated (Ordering).

        Required: order_id.
        order_id: Order/transaction ID
        affiliation: Store or affiliation from which this transaction occurred (e.g. Google Store)
        total: Revenue ($) with discounts and coupons added in
        revenue: Revenue ($) associated with the transaction (excluding shipping and tax)
        shipping: Shipping cost associated with the transaction
        tax: Total tax associated with the transaction
        discount: Total discount associated with the transaction
        coupon: Transaction coupon redeemed with the transaction
        currency: Currency code associated with the transaction
        products: Products in the order
        Further keywords are custom properties.
        """
        self._send(
            "order_updated",
            {
                "order_id": order_id,
                "affiliation": affiliation,
                "total": total,
                "revenue": revenue,
                "shipping": shipping,
                "tax": tax,
                "discount": discount,
                "coupon": coupon,
                "currency": currency,
                "products": products,
            },
            properties,
        )

    def order_completed(
        self,
        order_id: str | int,
        *,
        checkout_id: str | int | None = None,
        affiliation: str | int | None = None,
        subtotal: float | Decimal | None = None,
        total: float | Decimal | None = None,
        revenue: float | Decimal | None = None,
        shipping: float | Decimal | None = None,
        tax: float | Decimal | None = None,
        discount: float | Decimal | None = None,
        coupon: str | int | None = None,
        currency: str | int | None = None,
        products: Sequence[Mapping[str, Any]] | None = None,
        **properties: Any,
    ) -> None:
        """Order Completed (Ordering).

        Required: order_id.
        checkout_id: Checkout ID
        order_id: Order/transaction ID
        affiliation: Store or affiliation from which this transaction occurred (e.g. Google Store)
        subtotal: Order total after discounts but before taxes and shipping
        total: Subtotal ($) with shipping and taxes added in
        revenue: Revenue ($) of the transaction (including discounts, excluding shipping and taxes)
        shipping: Shipping cost associated with the transaction
        tax: Total tax associated with the transaction
        discount: Total discount associated with the transaction
        coupon: Transaction coupon redeemed with the transaction
        currency: Currency code associated with the transaction
        products: Products in the order
        Further keywords are custom properties.
        """
        self._send(
            "order_completed",
            {
                "checkout_id": checkout_id,
                "order_id": order_id,
                "affiliation": affiliation,
                "subtotal": subtotal,
                "total": total,
                "revenue": revenue,
                "shipping": shipping,
                "tax": tax,
                "discount": discount,
                "coupon": coupon,
                "currency": currency,
                "products": products,
            },
            properties,
        )

    def order_refunded(
        self,
        order_id: str | int,
        **properties: Any,
    ) -> None:
        """Order Refunded (Ordering).

        Required: order_id.
        order_id: Order/transaction ID
        Further keywords are custom properties.
        """
        self._send("order_refunded", {"order_id": order_id}, properties)

    def order_cancelled(
        self,
        order_id: str | int,
        *,
        affiliation: str | int | None = None,
        total: float | Decimal | None = None,
        revenue: float | Decimal | None = None,
        shipping: float | Decimal | None = None,
        tax: float | Decimal | None = None,
        discount: float | Decimal | None = None,
        coupon: str | int | None = None,
        currency: str | int | None = None,
        products: Sequence[Mapping[str, Any]] | None = None,
        **properties: Any,
    ) -> None:
        """Order Cancelled (Ordering).

        Required: order_id.
        order_id: Order/transaction ID
        affiliation: Store or affiliation from which this transaction occurred (e.g. Google Store)
        total: Revenue ($) with discounts and coupons added in
        revenue: Revenue ($) associated with the transaction (excluding shipping and tax)
        shipping: Shipping cost associated with the transaction
        tax: Total tax associated with the transaction
        discount: Total discount associated with the transaction
        coupon: Transaction coupon redeemed with the transaction
        currency: Currency code associated with the transaction
        products: Products in the order
        Further keywords are custom properties.
        """
        self._send(
            "order_cancelled",
            {
                "order_id": order_id,
                "affiliation": affiliation,
                "total": total,
                "revenue": revenue,
                "shipping": shipping,
                "tax": tax,
                "discount": discount,
                "coupon": coupon,
                "currency": currency,
                "products": products,
            },
            properties,
        )

    def coupon_entered(
        self,
        coupon_id: str | int,
        *,
        order_id: str | int | None = None,
        cart_id: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Coupon Entered (Coupons).

        Required: coupon_id.
        order_id: Order/transaction ID, if applicable
        cart_id: Cart ID, if applicable
        coupon_id: Coupon ID
        Further keywords are custom properties.
        """
        self._send(
            "coupon_entered", {"order_id": order_id, "cart_id": cart_id, "coupon_id": coupon_id}, properties
        )

    def coupon_applied(
        self,
        coupon_id: str | int,
        *,
        order_id: str | int | None = None,
        cart_id: str | int | None = None,
        coupon_name: str | int | None = None,
        discount: float | Decimal | None = None,
        **properties: Any,
    ) -> None:
        """Coupon Applied (Coupons).

        Required: coupon_id.
        order_id: Order/transaction ID, if applicable
        cart_id: Cart ID, if applicable
        coupon_id: Coupon ID
        coupon_name: Coupon name
        discount: Monetary discount applied through the coupon
        Further keywords are custom properties.
        """
        self._send(
            "coupon_applied",
            {
                "order_id": order_id,
                "cart_id": cart_id,
                "coupon_id": coupon_id,
                "coupon_name": coupon_name,
                "discount": discount,
            },
            properties,
        )

    def coupon_denied(
        self,
        coupon_id: str | int,
        *,
        order_id: str | int | None = None,
        cart_id: str | int | None = None,
        coupon_name: str | int | None = None,
        reason: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Coupon Denied (Coupons).

        Required: coupon_id.
        order_id: Order/transaction ID, if applicable
        cart_id: Cart ID, if applicable
        coupon_id: Coupon ID
        coupon_name: Coupon name
        reason: Reason the coupon was denied
        Further keywords are custom properties.
        """
        self._send(
            "coupon_denied",
            {
                "order_id": order_id,
                "cart_id": cart_id,
                "coupon_id": coupon_id,
                "coupon_name": coupon_name,
                "reason": reason,
            },
            properties,
        )

    def coupon_removed(
        self,
        coupon_id: str | int,
        *,
        order_id: str | int | None = None,
        cart_id: str | int | None = None,
        coupon_name: str | int | None = None,
        discount: float | Decimal | None = None,
        **properties: Any,
    ) -> None:
        """Coupon Removed (Coupons).

        Required: coupon_id.
        order_id: Order/transaction ID, if applicable
        cart_id: Cart ID, if applicable
        coupon_id: Coupon ID
        coupon_name: Coupon name
        discount: Monetary discount applied through the coupon
        Further keywords are custom properties.
        """
        self._send(
            "coupon_removed",
            {
                "order_id": order_id,
                "cart_id": cart_id,
                "coupon_id": coupon_id,
                "coupon_name": coupon_name,
                "discount": discount,
            },
            properties,
        )

    def product_added_to_wishlist(
        self,
        product_id: str | int,
        *,
        wishlist_id: str | int | None = None,
        wishlist_name: str | int | None = None,
        sku: str | int | None = None,
        category: str | int | None = None,
        name: str | int | None = None,
        brand: str | int | None = None,
        variant: str | int | None = None,
        price: float | Decimal | None = None,
        quantity: float | Decimal | None = None,
        coupon: str | int | None = None,
        position: float | Decimal | None = None,
        url: str | int | None = None,
        image_url: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Product Added to Wishlist (Wishlisting).

        Required: product_id.
        wishlist_id: Wishlist ID to which the product was added to
        wishlist_name: Wishlist name to which the product was added to
        product_id: Database id of the product
        sku: Sku of the product
        category: Product category
        name: Name of the product
        brand: Brand associated with the product
        variant: Variant of the product
        price: Price ($) of the product
        quantity: Quantity of a product
        coupon: Coupon code associated with a product (for example, MAY_DEALS_3)
        position: Position in the product list (ex. 3)
        url: URL of the product page
        image_url: Image url of the product
        Further keywords are custom properties.
        """
        self._send(
            "product_added_to_wishlist",
            {
                "wishlist_id": wishlist_id,
                "wishlist_name": wishlist_name,
                "product_id": product_id,
                "sku": sku,
                "category": category,
                "name": name,
                "brand": brand,
                "variant": variant,
                "price": price,
                "quantity": quantity,
                "coupon": coupon,
                "position": position,
                "url": url,
                "image_url": image_url,
            },
            properties,
        )

    def product_removed_from_wishlist(
        self,
        product_id: str | int,
        *,
        wishlist_id: str | int | None = None,
        wishlist_name: str | int | None = None,
        sku: str | int | None = None,
        category: str | int | None = None,
        name: str | int | None = None,
        brand: str | int | None = None,
        variant: str | int | None = None,
        price: float | Decimal | None = None,
        quantity: float | Decimal | None = None,
        coupon: str | int | None = None,
        position: float | Decimal | None = None,
        url: str | int | None = None,
        image_url: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Product Removed from Wishlist (Wishlisting).

        Required: product_id.
        wishlist_id: Wishlist ID to which the product was added to
        wishlist_name: Wishlist name to which the product was added to
        product_id: Database id of the product
        sku: Sku of the product
        category: Product category
        name: Name of the product
        brand: Brand associated with the product
        variant: Variant of the product
        price: Price ($) of the product
        quantity: Quantity of a product
        coupon: Coupon code associated with a product (for example, MAY_DEALS_3)
        position: Position in the product list (ex. 3)
        url: URL of the product page
        image_url: Image url of the product
        Further keywords are custom properties.
        """
        self._send(
            "product_removed_from_wishlist",
            {
                "wishlist_id": wishlist_id,
                "wishlist_name": wishlist_name,
                "product_id": product_id,
                "sku": sku,
                "category": category,
                "name": name,
                "brand": brand,
                "variant": variant,
                "price": price,
                "quantity": quantity,
                "coupon": coupon,
                "position": position,
                "url": url,
                "image_url": image_url,
            },
            properties,
        )

    def wishlist_product_added_to_cart(
        self,
        product_id: str | int,
        *,
        wishlist_id: str | int | None = None,
        wishlist_name: str | int | None = None,
        cart_id: str | int | None = None,
        sku: str | int | None = None,
        category: str | int | None = None,
        name: str | int | None = None,
        brand: str | int | None = None,
        variant: str | int | None = None,
        price: float | Decimal | None = None,
        quantity: float | Decimal | None = None,
        coupon: str | int | None = None,
        position: float | Decimal | None = None,
        url: str | int | None = None,
        image_url: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Wishlist Product Added to Cart (Wishlisting).

        Required: product_id.
        wishlist_id: Wishlist ID to which the product was added to
        wishlist_name: Wishlist name to which the product was added to
        cart_id: Cart ID to which this product was added to
        product_id: Database id of the product
        sku: Sku of the product
        category: Product category
        name: Name of the product
        brand: Brand associated with the product
        variant: Variant of the product
        price: Price ($) of the product
        quantity: Quantity of a product
        coupon: Coupon code associated with a product (for example, MAY_DEALS_3)
        position: Position in the product list (ex. 3)
        url: URL of the product page
        image_url: Image url of the product
        Further keywords are custom properties.
        """
        self._send(
            "wishlist_product_added_to_cart",
            {
                "wishlist_id": wishlist_id,
                "wishlist_name": wishlist_name,
                "cart_id": cart_id,
                "product_id": product_id,
                "sku": sku,
                "category": category,
                "name": name,
                "brand": brand,
                "variant": variant,
                "price": price,
                "quantity": quantity,
                "coupon": coupon,
                "position": position,
                "url": url,
                "image_url": image_url,
            },
            properties,
        )

    def product_shared(
        self,
        product_id: str | int,
        *,
        share_via: str | int | None = None,
        share_message: str | int | None = None,
        recipient: str | int | None = None,
        sku: str | int | None = None,
        category: str | int | None = None,
        name: str | int | None = None,
        brand: str | int | None = None,
        variant: str | int | None = None,
        price: float | Decimal | None = None,
        url: str | int | None = None,
        image_url: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Product Shared (Sharing).

        Required: product_id.
        share_via: Method of sharing
        share_message: Message that the sender sent
        recipient: Recipient of the sharing
        product_id: Database id of the product
        sku: Sku of the product
        category: Product category
        name: Name of the product
        brand: Brand associated with the product
        variant: Variant of the product
        price: Price ($) of the product
        url: URL of the product page
        image_url: Image url of the product
        Further keywords are custom properties.
        """
        self._send(
            "product_shared",
            {
                "share_via": share_via,
                "share_message": share_message,
                "recipient": recipient,
                "product_id": product_id,
                "sku": sku,
                "category": category,
                "name": name,
                "brand": brand,
                "variant": variant,
                "price": price,
                "url": url,
                "image_url": image_url,
            },
            properties,
        )

    def cart_shared(
        self,
        cart_id: str | int,
        *,
        share_via: str | int | None = None,
        share_message: str | int | None = None,
        recipient: str | int | None = None,
        products: Sequence[Mapping[str, Any]] | None = None,
        **properties: Any,
    ) -> None:
        """Cart Shared (Sharing).

        Required: cart_id.
        share_via: Method of sharing
        share_message: Message that the sender sent
        recipient: Recipient of the sharing
        cart_id: Shopping cart ID
        products: Products displayed in the product list
        Further keywords are custom properties.
        """
        self._send(
            "cart_shared",
            {
                "share_via": share_via,
                "share_message": share_message,
                "recipient": recipient,
                "cart_id": cart_id,
                "products": products,
            },
            properties,
        )

    def product_reviewed(
        self,
        product_id: str | int,
        *,
        review_id: str | int | None = None,
        review_body: str | int | None = None,
        rating: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Product Reviewed (Reviewing).

        Required: product_id.
        product_id: Product's ID
        review_id: Review ID
        review_body: Review body
        rating: Review rating
        Further keywords are custom properties.
        """
        self._send(
            "product_reviewed",
            {"product_id": product_id, "review_id": review_id, "review_body": review_body, "rating": rating},
            properties,
        )


class B2B(SpecCalls):
    """Segment's B2B SaaS Spec: ``request.segment.b2b``."""

    __slots__ = ()

    def account_created(
        self,
        *,
        account_name: str | int | None = None,
        group_id: str | int,
        **properties: Any,
    ) -> None:
        """Account Created (Account).

        group_id: the account, sent as context.groupId (required).
        account_name: The name of the account being created
        Further keywords are custom properties.
        """
        self._send("account_created", {"account_name": account_name}, properties, group_id)

    def account_deleted(
        self,
        *,
        account_name: str | int | None = None,
        group_id: str | int,
        **properties: Any,
    ) -> None:
        """Account Deleted (Account).

        group_id: the account, sent as context.groupId (required).
        account_name: The name of the account being deleted
        Further keywords are custom properties.
        """
        self._send("account_deleted", {"account_name": account_name}, properties, group_id)

    def signed_up(
        self,
        *,
        type: str | int | None = None,
        first_name: str | int | None = None,
        last_name: str | int | None = None,
        email: str | int | None = None,
        phone: str | int | None = None,
        username: str | int | None = None,
        title: str | int | None = None,
        group_id: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Signed Up (User).

        group_id: the account, sent as context.groupId.
        type: The type of signup, e.g. invited, organic
        first_name: The first name of the user
        last_name: The last name of the user
        email: The email of the user
        phone: The phone number of the user
        username: The username of the user
        title: The title of the user
        Further keywords are custom properties.
        """
        self._send(
            "signed_up",
            {
                "type": type,
                "first_name": first_name,
                "last_name": last_name,
                "email": email,
                "phone": phone,
                "username": username,
                "title": title,
            },
            properties,
            group_id,
        )

    def signed_in(
        self,
        *,
        username: str | int | None = None,
        group_id: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Signed In (User).

        group_id: the account, sent as context.groupId.
        username: The username of the user signing in
        Further keywords are custom properties.
        """
        self._send("signed_in", {"username": username}, properties, group_id)

    def signed_out(
        self,
        *,
        username: str | int | None = None,
        group_id: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Signed Out (User).

        group_id: the account, sent as context.groupId.
        username: The username of the user signing out
        Further keywords are custom properties.
        """
        self._send("signed_out", {"username": username}, properties, group_id)

    def invite_sent(
        self,
        invitee_email: str | int,
        *,
        invitee_first_name: str | int | None = None,
        invitee_last_name: str | int | None = None,
        invitee_role: str | int | None = None,
        group_id: str | int | None = None,
        **properties: Any,
    ) -> None:
        """Invite Sent (User).

        Required: invitee_email.
        group_id: the account, sent as context.groupId.
        invitee_email: The email address of the person receiving the invite
        invitee_first_name: The first name of the person receiving the invite
        invitee_last_name: The last name of the person receiving the invite
        invitee_role: The permission group for the person receiving the invite
        Further keywords are custom properties.
        """
        self._send(
            "invite_sent",
            {
                "invitee_email": invitee_email,
                "invitee_first_name": invitee_first_name,
                "invitee_last_name": invitee_last_name,
                "invitee_role": invitee_role,
            },
            properties,
            group_id,
        )

    def account_added_user(
        self,
        *,
        role: str | int | None = None,
        group_id: str | int,
        **properties: Any,
    ) -> None:
        """Account Added User (Account).

        group_id: the account, sent as context.groupId (required).
        role: The permission group for this user in this account
        Further keywords are custom properties.
        """
        self._send("account_added_user", {"role": role}, properties, group_id)

    def account_removed_user(
        self,
        *,
        group_id: str | int,
        **properties: Any,
    ) -> None:
        """Account Removed User (Account).

        group_id: the account, sent as context.groupId (required).
        Further keywords are custom properties.
        """
        self._send("account_removed_user", {}, properties, group_id)

    def trial_started(
        self,
        *,
        trial_start_date: _dt.datetime | _dt.date | str | None = None,
        trial_end_date: _dt.datetime | _dt.date | str | None = None,
        trial_plan_name: str | int | None = None,
        group_id: str | int,
        **properties: Any,
    ) -> None:
        """Trial Started (Trial).

        group_id: the account, sent as context.groupId (required).
        trial_start_date: The date when the trial starts (an ISO-8601 date string)
        trial_end_date: The date when the trial ends (an ISO-8601 date string)
        trial_plan_name: The name of the plan being trialed
        Further keywords are custom properties.
        """
        self._send(
            "trial_started",
            {
                "trial_start_date": trial_start_date,
                "trial_end_date": trial_end_date,
                "trial_plan_name": trial_plan_name,
            },
            properties,
            group_id,
        )

    def trial_ended(
        self,
        *,
        trial_start_date: _dt.datetime | _dt.date | str | None = None,
        trial_end_date: _dt.datetime | _dt.date | str | None = None,
        trial_plan_name: str | int | None = None,
        group_id: str | int,
        **properties: Any,
    ) -> None:
        """Trial Ended (Trial).

        group_id: the account, sent as context.groupId (required).
        trial_start_date: The date when the trial starts (an ISO-8601 date string)
        trial_end_date: The date when the trial ends (an ISO-8601 date string)
        trial_plan_name: The name of the plan being trialed
        Further keywords are custom properties.
        """
        self._send(
            "trial_ended",
            {
                "trial_start_date": trial_start_date,
                "trial_end_date": trial_end_date,
                "trial_plan_name": trial_plan_name,
            },
            properties,
            group_id,
        )


# ---- end of generated code ----
