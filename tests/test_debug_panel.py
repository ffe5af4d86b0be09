"""The django-debug-toolbar panel: the calls a request made, as JSON, with the tracking
plan rules they break; delivery unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("debug_toolbar")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

import django

django.setup()

from django.http import HttpResponse  # noqa: E402
from django.test import RequestFactory, override_settings  # noqa: E402
from helpers import stored  # noqa: E402

import segment_middleware  # noqa: E402
from segment_middleware.django import SegmentMiddleware  # noqa: E402
from segment_middleware.django.panels import SegmentPanel  # noqa: E402


def checkout(request: Any) -> HttpResponse:
    request.segment.ecommerce.order_completed("o-1", total=12.5)
    request.segment.track("Order Completed", {"total": "twelve"})
    return HttpResponse("ok")


def toolbar(request: Any) -> Any:
    """What a panel uses of the toolbar: its request, stats and store."""
    return SimpleNamespace(
        request=request, request_id="r1", stats={}, store=SimpleNamespace(save_panel=lambda *args: None)
    )


def test_the_panel_lists_the_requests_calls_with_json_and_plan_violations(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps({"events": {"Order Completed": {"properties": {"total": {"type": "number"}}}}})
    )
    store = tmp_path / "events.sqlite3"
    segment = {"LOCAL_STORE": str(store), "TRACKING_PLAN": str(plan)}
    with override_settings(SEGMENT=segment):
        request = RequestFactory().get("/checkout/?utm_source=ads", HTTP_COOKIE="ajs_anonymous_id=%22v-1%22")
        panel = SegmentPanel(toolbar(request), SegmentMiddleware(checkout))
        response = panel.process_request(request)
        panel.generate_stats(request, response)
        calls = panel.get_stats()["calls"]
        assert [(c["type"], c["name"]) for c in calls] == [
            ("track", "Order Completed"),
            ("track", "Order Completed"),
            ("page", "/checkout/"),
        ]
        first = json.loads(calls[0]["json"])
        assert first["properties"] == {"order_id": "o-1", "total": 12.5}
        assert first["anonymousId"] == "v-1" and first["context"]["campaign"] == {"source": "ads"}
        assert calls[0]["violations"] == [] and calls[1]["violations"] == ['properties.total: type "number"']
        assert panel.nav_subtitle == "3 calls"
        html = panel.content
        assert "Order Completed" in html and "properties.total: type &quot;number&quot;" in html
        assert "<script>" not in SegmentPanel(toolbar(request), checkout).content  # nothing recorded
        # Delivery is unchanged: the three calls reach the local store.
        assert segment_middleware.flush(10)
        assert [m["type"] for m in stored(store)] == ["track", "track", "page"]


def test_the_panel_sees_only_its_own_requests_calls(tmp_path: Path) -> None:
    """Another thread's calls (another request) while a request is watched are not its own."""
    import threading

    from segment_middleware.core import Runtime
    from segment_middleware.settings import Settings
    from segment_middleware.taps import watch

    rt = Runtime(Settings(local_store=str(tmp_path / "s.sqlite3")))
    with watch() as seen:
        rt.tracker(user_id=1).track("Mine")
        other = threading.Thread(target=lambda: rt.tracker(user_id=2).track("Theirs"))
        other.start()
        other.join()
    rt.tracker(user_id=1).track("After")
    assert [w.item.message["event"] for w in seen] == ["Mine"]
    assert rt.delivery.flush(10) and rt.delivery.stats()["stored"] == 3
