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


# ---------------------------------------------------------------------- the command and the spec plan
def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from segment_middleware.cli import main

    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_spec_plan_passes_what_the_spec_methods_send_and_catches_what_they_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_spec_events import ALL, _call

    code, out, _ = cli(["plan", "spec"], capsys)
    assert code == 0
    path = write(tmp_path, out, "spec.json")
    rt = runtime(tmp_path, "raise", json.loads(out))  # every call below must pass the plan
    with capture() as events:
        for event, b2b in ALL:
            _call(event, b2b, rt.tracker(user_id="u"))
    assert len(events) == len(ALL)
    lines = [json.dumps(m) for m in events]
    lines.append(json.dumps({"type": "track", "event": "Order Completed", "properties": {"total": "9"}}))
    lines.append(json.dumps({"type": "track", "event": "My Own Event"}))  # unplanned: allowed
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    code, out, _ = cli(["plan", "check", path, str(tmp_path / "events.jsonl")], capsys)
    assert code == 1
    assert out.splitlines() == [
        f"plan: {path} ok (38 planned events)",
        f"{len(ALL) + 1}: 'Order Completed' breaks the plan: properties.order_id: required; "
        'properties.total: type "number"',
        f"checked {len(ALL) + 2} message(s): 1 break the plan",
    ]


def test_plan_check_on_the_local_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "local.sqlite3")
    rt = Runtime(Settings(local_store=store))
    rt.tracker(user_id=1).track("Order Completed", {"order_id": "o-1"})
    rt.tracker(user_id=1).track("Order Completed", {})
    assert rt.delivery.flush(10)
    path = write(tmp_path, PLAN)
    code, out, _ = cli(["--store", store, "plan", "check", path, "--stored"], capsys)
    assert code == 1 and "2: 'Order Completed' breaks the plan: properties.order_id: required" in out
    assert cli(["plan", "check", path], capsys)[:2] == (0, f"plan: {path} ok (1 planned events)\n")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: [write(d, "{bad", "p.json")], "p.json: does not parse"),
        (lambda d: [], "plan check needs the plan file"),
        (lambda d: [write(d, PLAN), str(d / "missing.jsonl")], "missing.jsonl: cannot be read"),
        (
            lambda d: [write(d, PLAN), write(d, '{"type": "track"}\nnot json\n', "e.jsonl")],
            "e.jsonl:2: not JSON",
        ),
    ],
)
def test_plan_check_input_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    code, _, err = cli(["plan", "check", *make(tmp_path)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_the_plan_file_is_read_once_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validating the settings compiles the plan; the runtime, a second app and the checks
    use that compiled plan. A changed file is read again."""
    from segment_middleware import plan as plan_module

    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"events": {"A": {"type": "object"}}}))
    reads: list[str] = []
    real = Path.read_text

    def counting(self: Path, *args: Any, **kwargs: Any) -> str:
        if self.name == "plan.json":
            reads.append(str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    monkeypatch.setattr(plan_module, "_COMPILED", {})
    first = Settings(tracking_plan=str(path), local_store=str(tmp_path / "s.sqlite3"))
    second = Settings(tracking_plan=str(path), local_store=str(tmp_path / "t.sqlite3"))
    assert first.plan is second.plan is not None
    assert len(reads) == 1
    path.write_text(json.dumps({"events": {"A": {"type": "object"}, "B": {"type": "object"}}}))
    third = Settings(tracking_plan=str(path), local_store=str(tmp_path / "u.sqlite3"))
    assert third.plan is not first.plan and len(reads) == 2
