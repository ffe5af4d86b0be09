"""Helpers shared by the unit test modules (test_settings, test_identity, test_runtime,
test_context, test_tracker, test_store)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings

from segment_middleware.context import (
    RequestFacts,
    request_context,
)
from segment_middleware.context import page_properties as _page_properties
from segment_middleware.core import Runtime
from segment_middleware.settings import DEFAULT_REDACT, Settings
from segment_middleware.store import Store

QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

WORDS = frozenset(DEFAULT_REDACT)


def stored(rt: Runtime) -> list[dict[str, Any]]:
    assert rt.delivery.flush(10)
    store = Store(rt.settings.local_store)
    try:
        return [row.message for row in store.events()]
    finally:
        store.close()


def build_context(f: RequestFacts | None, s: Settings) -> dict[str, Any]:
    return request_context(f, s)


def page_properties(f: RequestFacts, s: Settings, status: int | None, title: str | None) -> dict[str, Any]:
    """The automatic page call's properties, as the sender derives them."""
    return _page_properties(request_context(f, s)["page"], f, s, status, title)


def facts(**overrides: Any) -> RequestFacts:
    base: dict[str, Any] = {
        "method": "GET",
        "scheme": "https",
        "host": "shop.example",
        "path": "/cart",
        "query": "",
        "remote_addr": "203.0.113.7",
    }
    base.update(overrides)
    return RequestFacts(**base)
