"""The shop's source function: the payment provider's webhook becomes ``Order Completed``.

Checkout only places the order; the money is the payment provider's to confirm. It posts a
Stripe-format ``charge.succeeded`` event to ``/segment/sources/payments`` (the collection
mount in ``shop/urls.py``), signed with the shared secret (``SEGMENT["SOURCE_SECRETS"]``
in ``shop/settings.py``). ``segment_middleware.sources`` checks the signature and its
timestamp, then calls :func:`charge_succeeded`, which marks the order paid and sends
``Order Completed`` as the customer who placed it. A forged or replayed request gets 401
and sends nothing; a function that fails gets 500, sends nothing, and the provider retries.

Locally, ``python manage.py pay_order <order id>`` plays the provider (like ``stripe
trigger``). The app registers this module in ``ShopConfig.ready()`` (``shop/apps.py``).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from segment_middleware.sources import Webhook, source

from .models import Order


@source("payments", scheme="stripe")
def charge_succeeded(payload: Any, webhook: Webhook) -> None:
    """``charge.succeeded`` for one of our orders (its id in the charge's metadata, which
    checkout would give the provider): mark it paid and send ``Order Completed`` for its
    customer. A delivery retried by the provider finds the order paid and sends nothing
    again; other event types are acknowledged and ignored."""
    if payload.get("type") != "charge.succeeded":
        return
    charge = payload["data"]["object"]
    order_id = (charge.get("metadata") or {}).get("order_id")
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first() if order_id else None
        if order is None or order.paid:
            return
        order.paid = True
        order.save(update_fields=["paid"])
        items = list(order.items.select_related("product"))
    # Queued when this function returns (after the commit above); not at all if it raises.
    webhook.tracker(user_id=order.user_id).ecommerce.order_completed(
        order_id=str(order.pk),
        total=order.total,
        revenue=charge["amount"] / 100,  # what the provider actually charged
        currency=str(charge["currency"]).upper(),
        products=[_product(item) for item in items],
        payment_id=charge["id"],
    )


def _product(item: Any) -> dict[str, Any]:
    """An order line as the spec's product object, at the price it was sold for."""
    props = item.product.segment_properties()
    props.pop("currency")
    return {**props, "price": float(item.price), "quantity": item.quantity}
