"""Django views annotated with ``TrackedHttpRequest``: ``request.segment`` is a ``Tracker``."""

from __future__ import annotations

import datetime

from django.http import HttpRequest, HttpResponse, JsonResponse
from typing_extensions import assert_type

from segment_middleware import Tracker
from segment_middleware.django import TrackedHttpRequest


def checkout(request: TrackedHttpRequest) -> HttpResponse:
    assert_type(request.segment, Tracker)
    request.segment.title = "Checkout"
    request.segment.track("Order Completed", {"order_id": "o-1"}, integrations={"All": True})
    request.segment.identify("42", {"plan": "pro"}, timestamp=datetime.datetime.now(datetime.timezone.utc))
    request.segment.ecommerce.product_viewed(product_id="p-1")
    return HttpResponse(request.method or "")


async def item(request: TrackedHttpRequest, slug: str) -> JsonResponse:
    request.segment.track("Item Viewed", {"slug": slug}, message_id=f"item-{slug}")
    request.segment.group("acme", {"name": "Acme"}, context={"groupId": "acme"})
    return JsonResponse({"slug": slug})


def plain(request: HttpRequest) -> HttpResponse:
    """An untyped request still works: its ``segment`` is whatever the stubs say (an error
    under django-stubs, Any without them), so views that use it take TrackedHttpRequest."""
    return HttpResponse(status=204)
