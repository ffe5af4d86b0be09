"""Play the payment provider: post a signed ``charge.succeeded`` webhook for an order.

    python manage.py pay_order 3                     # to http://127.0.0.1:8000
    python manage.py pay_order 3 --url http://127.0.0.1:8001

The event has Stripe's shape and ``Stripe-Signature`` (``t=<time>,v1=<HMAC-SHA256 of
"<time>.<body>">``), signed with ``SEGMENT["SOURCE_SECRETS"]["payments"]``: what ``stripe
trigger`` would send, with the order's id in the charge's metadata. The running shop's
source function (``shop/sources.py``) turns it into ``Order Completed``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from shop.models import Order

PATH = "/segment/sources/payments"


def charge_succeeded(order: Order) -> dict[str, Any]:
    """A Stripe ``charge.succeeded`` event for ``order`` (the fields the source reads, and a
    few more so it looks like the real thing)."""
    now = int(time.time())
    return {
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "type": "charge.succeeded",
        "created": now,
        "livemode": False,
        "data": {
            "object": {
                "id": f"ch_{secrets.token_hex(12)}",
                "object": "charge",
                "amount": int(order.total * 100),
                "currency": "usd",
                "paid": True,
                "status": "succeeded",
                "created": now,
                "metadata": {"order_id": str(order.pk)},
            }
        },
    }


def stripe_signature(body: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class Command(BaseCommand):
    help = "Post the payment provider's signed 'charge succeeded' webhook for an order to the running shop."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("order_id", type=int)
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running shop's address")

    def handle(self, *args: Any, **options: Any) -> None:
        order = Order.objects.filter(pk=options["order_id"]).first()
        if order is None:
            raise CommandError(f"no order {options['order_id']}")
        secret = (getattr(settings, "SEGMENT", {}).get("SOURCE_SECRETS") or {}).get("payments")
        if not secret:
            raise CommandError("no payments webhook secret: set PAYMENTS_WEBHOOK_SECRET (or DJANGO_DEBUG=1)")
        body = json.dumps(charge_succeeded(order)).encode()
        request = urllib.request.Request(
            options["url"].rstrip("/") + PATH,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": stripe_signature(body, secret, int(time.time())),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, answer = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.read()
        except OSError as exc:
            raise CommandError(f"could not reach the shop at {options['url']}: {exc}") from None
        self.stdout.write(f"{status} {answer.decode(errors='replace')}")
        if status != 200:
            raise CommandError("the shop refused the webhook")
