"""Tracking plans (SPEC 5, README "Tracking plans"): each PLAN_VIOLATIONS mode, unplanned
events, plans that cannot be used, identify/group traits."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from segment_middleware.core import Runtime
from segment_middleware.settings import Settings, SettingsError
from segment_middleware.testing import capture

PLAN: dict[str, Any] = {
    "allow_unplanned_events": True,
    "events": {
        "Order Completed": {
            "type": "object",
            "required": ["order_id"],
            "properties": {"order_id": {"type": "string"}, "total": {"type": "number"}},
        }
    },
    "identify": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}},
}


def write(tmp_path: Path, plan: Any, name: str = "plan.json") -> str:
    path = tmp_path / name
    path.write_text(plan if isinstance(plan, str) else json.dumps(plan))
    return str(path)


def runtime(tmp_path: Path, mode: str, plan: Any = PLAN) -> Runtime:
    return Runtime(
        Settings(
            local_store=str(tmp_path / "s.sqlite3"),
            tracking_plan=write(tmp_path, plan),
            plan_violations=mode,
        )
    )


def test_warn_logs_once_per_event_and_rule_and_still_sends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime(tmp_path, "warn")
    t = rt.tracker(user_id=1)
    with caplog.at_level(logging.WARNING, "segment_middleware"), capture() as events:
        t.track("Order Completed", {"total": "secret-total"})
        t.track("Order Completed", {"total": "again"})
        t.track("Order Completed", {"order_id": "o-1", "total": 3})
    assert [m["properties"].get("order_id") for m in events] == [None, None, "o-1"]
    lines = [r.getMessage() for r in caplog.records if "tracking plan" in r.getMessage()]
    assert lines == [
        "segment: 'Order Completed' breaks the tracking plan (properties.order_id: required)",
        "segment: 'Order Completed' breaks the tracking plan (properties.total: type \"number\")",
    ]
    assert "secret-total" not in caplog.text  # the rule, never the value
    assert rt.delivery.stats()["blocked"] == 0


def test_drop_counts_blocked_and_sends_the_rest(tmp_path: Path) -> None:
    rt = runtime(tmp_path, "drop", {**PLAN, "allow_unplanned_events": False})
    t = rt.tracker(user_id=1)
    with capture() as events:
        t.track("Order Completed", {"order_id": 7})  # an int where the plan says string
        t.track("Unplanned Thing")
        t.track("Order Completed", {"order_id": "o-1"})
        t.identify(traits={"email": "not-checked-format"})  # draft 7 "format" is an annotation
        t.page("Home")  # pages are not in plans
    assert [(m["type"], m.get("event")) for m in events] == [
        ("track", "Order Completed"),
        ("identify", None),
        ("page", None),
    ]
    stats = rt.delivery.stats()
    assert stats["blocked"] == 2 and stats["queued"] == stats["delivered"] + stats["blocked"]


def test_raise_fails_the_call_naming_the_event_and_rule(tmp_path: Path) -> None:
    rt = runtime(tmp_path, "raise", {**PLAN, "group": {"type": "object", "required": ["name"]}})
    t = rt.tracker(user_id=1)
    with capture() as events:
        with pytest.raises(ValueError, match=r"'Order Completed' breaks the tracking plan .*plan\.json: "
                           r"properties\.order_id: required$"):  # fmt: skip
            t.track("Order Completed", {"total": 1})
        with pytest.raises(ValueError, match=r"'group' breaks .*traits\.name: required"):
            t.group("acme", {})
        t.track("Order Completed", {"order_id": "o"})
        t.track("Anything Else")  # unplanned events allowed
    assert [m.get("event") for m in events] == ["Order Completed", "Anything Else"]


def test_yaml_plans(tmp_path: Path) -> None:
    path = write(tmp_path, "events:\n  Signed Up:\n    type: object\n    required: [plan]\n", "plan.yaml")
    rt = Runtime(
        Settings(local_store=str(tmp_path / "s.sqlite3"), tracking_plan=path, plan_violations="raise")
    )
    with pytest.raises(ValueError, match=r"properties\.plan: required"):
        rt.tracker(user_id=1).track("Signed Up")


@pytest.mark.parametrize(
    ("plan", "name", "message"),
    [
        ("{not json", "plan.json", "plan.json: does not parse"),
        ("events: [unclosed", "plan.yaml", "plan.yaml: does not parse"),
        ([1, 2], "plan.json", "a plan is an object"),
        ({"events": {"E": {"type": "strin"}}}, "plan.json", "events['E']: not valid JSON Schema at type"),
        ({"events": {"E": {"required": "order_id"}}}, "plan.json", "events['E']: not valid JSON Schema"),
        ({"events": ["E"]}, "plan.json", "events must map event names to JSON Schemas"),
        ({"evnts": {}}, "plan.json", "unknown key 'evnts'"),
        ({"allow_unplanned_events": "yes"}, "plan.json", "allow_unplanned_events must be true or false"),
    ],
)
def test_a_plan_that_cannot_be_used_stops_start_up_naming_file_and_rule(
    tmp_path: Path, plan: Any, name: str, message: str
) -> None:
    path = write(tmp_path, plan, name)
    with pytest.raises(SettingsError) as failed:
        Settings(tracking_plan=path)
    text = str(failed.value)
    assert text.startswith("tracking_plan: ") and path in text and message in text and "\n" not in text
