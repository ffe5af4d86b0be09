"""Segment's E-commerce Spec v2 and B2B SaaS Spec, as data.

Transcribed from Segment's documentation source, repository ``segmentio/segment-docs`` at commit
``747b35d8f5f1889b041f2101185d562d7c4c016e`` (2025-11-07): ``src/connections/spec/ecommerce/v2.md``
(last changed in c5300b9c2a4d, 2025-09-18) and ``src/connections/spec/b2b-saas.md`` (last changed in
30e58f617812, 2022-07-19). Events are in the order of the pages' detail sections, properties in the
order of each event's table; ``products.$.*`` rows are folded into one ``products`` property (their
fields are ``PRODUCT``), and the B2B tables' ``context.groupId`` row is not a property but
``group_id_in_context=True``. ``identifying`` names the one property, from the event's own table, that
says what the event is about (``order_id`` for order events, ``product_id`` for single-product events,
``query``, ``list_id``, ``promotion_id``, ``cart_id``, ``step`` or ``coupon_id`` for the others,
``invitee_email`` for Invite Sent); it is empty when the table has no such property (the B2B account
and trial events, whose id is ``context.groupId``, and the sign-up/in/out events, whose user is the
message's ``userId``). Callers treat these names as required, so the rule is deliberately narrow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecProperty:
    name: str  # the spec's snake_case property name, exactly as on the page
    # one of: "string", "number", "integer", "boolean", "array", "object", "products", "date"
    type: str
    description: str  # the spec's description, one line, shortened if long


@dataclass(frozen=True)
class SpecEvent:
    method: str  # snake_case of the event name: "Order Completed" -> "order_completed"
    event: str  # the exact event name of the spec
    group: str  # the spec's section: "Browsing", "Ordering", ...; for B2B "Account", "Trial", ...
    properties: tuple[SpecProperty, ...]  # the event's property table, in the page's order
    identifying: tuple[str, ...]  # the properties that identify what the event is about
    group_id_in_context: bool = False  # B2B only: the spec asks for context.groupId on this event


_P = SpecProperty

PRODUCT: tuple[SpecProperty, ...] = (
    _P("product_id", "string", "Database id of the product"),
    _P("sku", "string", "Sku of the product"),
    _P("category", "string", "Product category"),
    _P("name", "string", "Name of the product"),
    _P("brand", "string", "Brand associated with the product"),
    _P("variant", "string", "Variant of the product"),
    _P("price", "number", "Price ($) of the product"),
    _P("quantity", "number", "Quantity of a product"),
    _P("coupon", "string", "Coupon code associated with a product (for example, MAY_DEALS_3)"),
    _P("position", "number", "Position in the product list (ex. 3)"),
    _P("url", "string", "URL of the product page"),
    _P("image_url", "string", "Image url of the product"),
)

_PRODUCT_BY_NAME = {p.name: p for p in PRODUCT}


def _product(*names: str) -> tuple[SpecProperty, ...]:
    """The product table's rows with these names, in this order (a single-product event's fields)."""
    return tuple(_PRODUCT_BY_NAME[name] for name in names)


_ALL_PRODUCT_FIELDS = tuple(p.name for p in PRODUCT)

# Rows shared, word for word or nearly, by several tables of the page.
_PRODUCTS_LISTED = _P("products", "products", "Products displayed in the product list")
_PRODUCTS_ORDERED = _P("products", "products", "Products in the order")
_LIST_ID = _P("list_id", "string", "Product list being viewed")
_LIST_CATEGORY = _P("category", "string", "Product category being viewed")
_ORDER_ID = _P("order_id", "string", "Order/transaction ID")
_AFFILIATION = _P(
    "affiliation", "string", "Store or affiliation from which this transaction occurred (e.g. Google Store)"
)
_REVENUE = _P("revenue", "number", "Revenue ($) associated with the transaction (excluding shipping and tax)")
_SHIPPING = _P("shipping", "number", "Shipping cost associated with the transaction")
_TAX = _P("tax", "number", "Total tax associated with the transaction")
_DISCOUNT = _P("discount", "number", "Total discount associated with the transaction")
_COUPON = _P("coupon", "string", "Transaction coupon redeemed with the transaction")
_CURRENCY = _P("currency", "string", "Currency code associated with the transaction")
_CHECKOUT_ID = _P("checkout_id", "string", "Checkout transaction ID")
_STEP = _P("step", "number", "Number representing a step in the checkout process")
_SHIPPING_METHOD = _P("shipping_method", "string", "String representing the shipping the method chosen")
_PAYMENT_METHOD = _P("payment_method", "string", "String representing the payment method chosen")
_PROMOTION = (
    _P("promotion_id", "string", "Promotion's ID"),
    _P("creative", "string", "Promotion's creative"),
    _P("name", "string", "Promotion's name"),
    _P("position", "string", "Promotion's position"),
)
_COUPON_ORDER_ID = _P("order_id", "string", "Order/transaction ID, if applicable")
_COUPON_CART_ID = _P("cart_id", "string", "Cart ID, if applicable")
_COUPON_ID = _P("coupon_id", "string", "Coupon ID")
_COUPON_NAME = _P("coupon_name", "string", "Coupon name")
_COUPON_DISCOUNT = _P("discount", "number", "Monetary discount applied through the coupon")
_WISHLIST_ID = _P("wishlist_id", "string", "Wishlist ID to which the product was added to")
_WISHLIST_NAME = _P("wishlist_name", "string", "Wishlist name to which the product was added to")
_SHARE = (
    _P("share_via", "string", "Method of sharing"),
    _P("share_message", "string", "Message that the sender sent"),
    _P("recipient", "string", "Recipient of the sharing"),
)

ECOMMERCE: tuple[SpecEvent, ...] = (
    # Browsing
    SpecEvent(
        "products_searched",
        "Products Searched",
        "Browsing",
        (_P("query", "string", "Query the user searched with (the spec allows String or Object)"),),
        ("query",),
    ),
    SpecEvent(
        "product_list_viewed",
        "Product List Viewed",
        "Browsing",
        (_LIST_ID, _LIST_CATEGORY, _PRODUCTS_LISTED),
        ("list_id",),
    ),
    SpecEvent(
        "product_list_filtered",
        "Product List Filtered",
        "Browsing",
        (
            _LIST_ID,
            _LIST_CATEGORY,
            _P("filters", "array", "Product filters that the customer is using (objects of type, value)"),
            _P("sorts", "array", "Product sorting that the customer is using (objects of type, value)"),
            _PRODUCTS_LISTED,
        ),
        ("list_id",),
    ),
    # Promotions
    SpecEvent("promotion_viewed", "Promotion Viewed", "Promotions", _PROMOTION, ("promotion_id",)),
    SpecEvent("promotion_clicked", "Promotion Clicked", "Promotions", _PROMOTION, ("promotion_id",)),
    # Core Ordering
    SpecEvent("product_clicked", "Product Clicked", "Ordering", PRODUCT, ("product_id",)),
    SpecEvent(
        "product_viewed",
        "Product Viewed",
        "Ordering",
        (
            *_product(
                "product_id", "sku", "category", "name", "brand", "variant", "price", "quantity", "coupon"
            ),
            _CURRENCY,
            *_product("position"),
            _P("value", "number", "Total value of the product after quantity"),
            *_product("url", "image_url"),
        ),
        ("product_id",),
    ),
    SpecEvent(
        "product_added",
        "Product Added",
        "Ordering",
        (_P("cart_id", "string", "Cart ID to which the product was added to"), *PRODUCT),
        ("product_id",),
    ),
    SpecEvent(
        "product_removed",
        "Product Removed",
        "Ordering",
        (_P("cart_id", "string", "Cart ID to which the product was removed from"), *PRODUCT),
        ("product_id",),
    ),
    SpecEvent(
        "cart_viewed",
        "Cart Viewed",
        "Ordering",
        (_P("cart_id", "string", "Shopping cart ID"), _PRODUCTS_LISTED),
        ("cart_id",),
    ),
    SpecEvent(
        "checkout_started",
        "Checkout Started",
        "Ordering",
        (
            _ORDER_ID,
            _AFFILIATION,
            _P("value", "number", "Revenue ($) with discounts and coupons added in"),
            _REVENUE,
            _SHIPPING,
            _TAX,
            _DISCOUNT,
            _COUPON,
            _CURRENCY,
            _PRODUCTS_ORDERED,
        ),
        ("order_id",),
    ),
    SpecEvent(
        "checkout_step_viewed",
        "Checkout Step Viewed",
        "Ordering",
        (_CHECKOUT_ID, _STEP, _SHIPPING_METHOD, _PAYMENT_METHOD),
        ("step",),
    ),
    SpecEvent(
        "checkout_step_completed",
        "Checkout Step Completed",
        "Ordering",
        (_CHECKOUT_ID, _STEP, _SHIPPING_METHOD, _PAYMENT_METHOD),
        ("step",),
    ),
    SpecEvent(
        "payment_info_entered",
        "Payment Info Entered",
        "Ordering",
        (
            _CHECKOUT_ID,
            _P("order_id", "string", "Order ID (optional)"),
            _STEP,
            _SHIPPING_METHOD,
            _PAYMENT_METHOD,
        ),
        # The table marks order_id "(optional)": the checkout is what this event is about.
        ("checkout_id",),
    ),
    SpecEvent(
        "order_updated",
        "Order Updated",
        "Ordering",
        (
            _ORDER_ID,
            _AFFILIATION,
            _P("total", "number", "Revenue ($) with discounts and coupons added in"),
            _REVENUE,
            _SHIPPING,
            _TAX,
            _DISCOUNT,
            _COUPON,
            _CURRENCY,
            _PRODUCTS_ORDERED,
        ),
        ("order_id",),
    ),
    SpecEvent(
        "order_completed",
        "Order Completed",
        "Ordering",
        (
            _P("checkout_id", "string", "Checkout ID"),
            _ORDER_ID,
            _AFFILIATION,
            _P("subtotal", "number", "Order total after discounts but before taxes and shipping"),
            _P("total", "number", "Subtotal ($) with shipping and taxes added in"),
            _P(
                "revenue",
                "number",
                "Revenue ($) of the transaction (including discounts, excluding shipping and taxes)",
            ),
            _SHIPPING,
            _TAX,
            _DISCOUNT,
            _COUPON,
            _CURRENCY,
            _PRODUCTS_ORDERED,
        ),
        ("order_id",),
    ),
    # The page's table has only order_id; its prose asks for the Order Completed call's cart items too.
    SpecEvent("order_refunded", "Order Refunded", "Ordering", (_ORDER_ID,), ("order_id",)),
    SpecEvent(
        "order_cancelled",
        "Order Cancelled",
        "Ordering",
        (
            _ORDER_ID,
            _AFFILIATION,
            _P("total", "number", "Revenue ($) with discounts and coupons added in"),
            _REVENUE,
            _SHIPPING,
            _TAX,
            _DISCOUNT,
            _COUPON,
            _CURRENCY,
            _PRODUCTS_ORDERED,
        ),
        ("order_id",),
    ),
    # Coupons
    SpecEvent(
        "coupon_entered",
        "Coupon Entered",
        "Coupons",
        (_COUPON_ORDER_ID, _COUPON_CART_ID, _COUPON_ID),
        ("coupon_id",),
    ),
    SpecEvent(
        "coupon_applied",
        "Coupon Applied",
        "Coupons",
        (_COUPON_ORDER_ID, _COUPON_CART_ID, _COUPON_ID, _COUPON_NAME, _COUPON_DISCOUNT),
        ("coupon_id",),
    ),
    SpecEvent(
        "coupon_denied",
        "Coupon Denied",
        "Coupons",
        (
            _COUPON_ORDER_ID,
            _COUPON_CART_ID,
            _COUPON_ID,
            _COUPON_NAME,
            _P("reason", "string", "Reason the coupon was denied"),
        ),
        ("coupon_id",),
    ),
    SpecEvent(
        "coupon_removed",
        "Coupon Removed",
        "Coupons",
        (_COUPON_ORDER_ID, _COUPON_CART_ID, _COUPON_ID, _COUPON_NAME, _COUPON_DISCOUNT),
        ("coupon_id",),
    ),
    # Wishlisting
    SpecEvent(
        "product_added_to_wishlist",
        "Product Added to Wishlist",
        "Wishlisting",
        (_WISHLIST_ID, _WISHLIST_NAME, *PRODUCT),
        ("product_id",),
    ),
    SpecEvent(
        "product_removed_from_wishlist",
        "Product Removed from Wishlist",
        "Wishlisting",
        (_WISHLIST_ID, _WISHLIST_NAME, *PRODUCT),
        ("product_id",),
    ),
    SpecEvent(
        "wishlist_product_added_to_cart",
        "Wishlist Product Added to Cart",
        "Wishlisting",
        (
            _WISHLIST_ID,
            _WISHLIST_NAME,
            _P("cart_id", "string", "Cart ID to which this product was added to"),
            *PRODUCT,
        ),
        ("product_id",),
    ),
    # Sharing
    SpecEvent(
        "product_shared",
        "Product Shared",
        "Sharing",
        (
            *_SHARE,
            *_product(
                "product_id", "sku", "category", "name", "brand", "variant", "price", "url", "image_url"
            ),
        ),
        ("product_id",),
    ),
    SpecEvent(
        "cart_shared",
        "Cart Shared",
        "Sharing",
        # The table lists only products.$.product_id for the products.
        (*_SHARE, _P("cart_id", "string", "Shopping cart ID"), _PRODUCTS_LISTED),
        ("cart_id",),
    ),
    # Reviewing
    SpecEvent(
        "product_reviewed",
        "Product Reviewed",
        "Reviewing",
        (
            _P("product_id", "string", "Product's ID"),
            _P("review_id", "string", "Review ID"),
            _P("review_body", "string", "Review body"),
            _P("rating", "string", "Review rating"),
        ),
        ("product_id",),
    ),
)

# The B2B page has one flat list of events, no sections: the groups are ours. Every one of its tables has
# a context.groupId row (the account's id), hence group_id_in_context=True throughout.
_TRIAL = (
    _P("trial_start_date", "date", "The date when the trial starts (an ISO-8601 date string)"),
    _P("trial_end_date", "date", "The date when the trial ends (an ISO-8601 date string)"),
    _P("trial_plan_name", "string", "The name of the plan being trialed"),
)

B2B: tuple[SpecEvent, ...] = (
    SpecEvent(
        "account_created",
        "Account Created",
        "Account",
        (_P("account_name", "string", "The name of the account being created"),),
        (),
        group_id_in_context=True,
    ),
    SpecEvent(
        "account_deleted",
        "Account Deleted",
        "Account",
        (_P("account_name", "string", "The name of the account being deleted"),),
        (),
        group_id_in_context=True,
    ),
    SpecEvent(
        "signed_up",
        "Signed Up",
        "User",
        (
            _P("type", "string", "The type of signup, e.g. invited, organic"),
            _P("first_name", "string", "The first name of the user"),
            _P("last_name", "string", "The last name of the user"),
            _P("email", "string", "The email of the user"),
            _P("phone", "string", "The phone number of the user"),
            _P("username", "string", "The username of the user"),
            _P("title", "string", "The title of the user"),
        ),
        (),
        group_id_in_context=True,
    ),
    SpecEvent(
        "signed_in",
        "Signed In",
        "User",
        (_P("username", "string", "The username of the user signing in"),),
        (),
        group_id_in_context=True,
    ),
    SpecEvent(
        "signed_out",
        "Signed Out",
        "User",
        (_P("username", "string", "The username of the user signing out"),),
        (),
        group_id_in_context=True,
    ),
    SpecEvent(
        "invite_sent",
        "Invite Sent",
        "User",
        (
            _P("invitee_email", "string", "The email address of the person receiving the invite"),
            _P("invitee_first_name", "string", "The first name of the person receiving the invite"),
            _P("invitee_last_name", "string", "The last name of the person receiving the invite"),
            _P("invitee_role", "string", "The permission group for the person receiving the invite"),
        ),
        ("invitee_email",),
        group_id_in_context=True,
    ),
    SpecEvent(
        "account_added_user",
        "Account Added User",
        "Account",
        (_P("role", "string", "The permission group for this user in this account"),),
        (),
        group_id_in_context=True,
    ),
    SpecEvent("account_removed_user", "Account Removed User", "Account", (), (), group_id_in_context=True),
    SpecEvent("trial_started", "Trial Started", "Trial", _TRIAL, (), group_id_in_context=True),
    SpecEvent("trial_ended", "Trial Ended", "Trial", _TRIAL, (), group_id_in_context=True),
)


#: The events whose properties include ``currency`` (DEFAULT_CURRENCY fills it).
CURRENCY_EVENTS: frozenset[str] = frozenset(
    event.event for event in (*ECOMMERCE, *B2B) if any(p.name == "currency" for p in event.properties)
)
