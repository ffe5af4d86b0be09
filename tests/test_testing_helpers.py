"""``segment_middleware.testing.capture()`` and the ``segment_events`` pytest fixture, as
users' own test suites use them. Every adapter is covered by the settings matrix
(test_settings_matrix: the capture test); the sample project under ``sample_project/``
is run here by pytest in a subprocess, the way a user's suite would run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import segment_middleware
from segment_middleware.core import Runtime
from segment_middleware.settings import Settings
from segment_middleware.testing import capture

SAMPLE = Path(__file__).parent / "sample_project"


def run_pytest(project: Path, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEGMENT_LOCAL_STORE": str(store), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("SEGMENT_WRITE_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "ignore::DeprecationWarning"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_sample_project_tests_its_views_with_capture_and_the_fixture(tmp_path: Path) -> None:
    """A Django SimpleTestCase with ``capture()``, a Django test and a FastAPI test with
    the ``segment_events`` fixture (found through the package's pytest11 entry point):
    all pass, and nothing is written to the local store."""
    store = tmp_path / "store" / "events.sqlite3"
    result = run_pytest(SAMPLE, store)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert not store.exists()


def test_a_wrong_expectation_fails_the_users_test_and_says_what_was_sent(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("check_*.py", "__pycache__"))
    (project / "check_wrong.py").write_text(
        "from fastapi.testclient import TestClient\n"
        "from sample_fastapi import app\n\n"
        "def test_wrong(segment_events):\n"
        "    TestClient(app).post('/orders/secret-order-7/complete')\n"
        "    segment_events.assert_sent('track', event='Order Refunded')\n"
    )
    result = run_pytest(project, tmp_path / "events.sqlite3")
    assert result.returncode == 1, result.stdout + result.stderr
    said = "no track with event='Order Refunded' was sent; sent: [track 'Order Completed', page "
    assert said in result.stdout
    assert "secret-order-7" not in result.stdout.split("AssertionError")[-1]  # names, never values


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return Runtime(Settings(local_store=str(tmp_path / "events.sqlite3")))


def test_a_call_is_in_events_when_it_returns_as_the_endpoint_would_read_it(runtime: Runtime) -> None:
    with capture() as events:
        runtime.tracker(user_id=42).track("Order Completed", {"products": ({"sku": "a"},), "n": 1})
        assert len(events) == 1  # synchronous: no flush
    (message,) = events
    assert message["userId"] == "42" and message["event"] == "Order Completed"
    assert message["properties"] == {"products": [{"sku": "a"}], "n": 1}  # a JSON round trip
    assert message["context"]["library"]["name"] == "segment-middleware"
    assert message["messageId"] and message["timestamp"].endswith("Z")
    assert events.tracks("Order Completed") == [message] and events.tracks("Other") == []
    assert events.identifies() == [] and list(events) == [message] and events[-1] is message


def test_nothing_is_queued_sent_or_stored_and_the_counts_add_up(runtime: Runtime, tmp_path: Path) -> None:
    with capture() as events:
        tracker = runtime.tracker(anonymous_id="anon-1")
        tracker.identify(7, {"plan": "pro"})
        tracker.group("acme", {"name": "Acme"})
        tracker.alias("u-7")
    assert [m["type"] for m in events] == ["identify", "group", "alias"]
    assert events.identifies(user_id=7) and events.groups("acme") and events.aliases()
    assert runtime.delivery.pending == 0 and segment_middleware.flush(5)
    stats = runtime.delivery.stats()
    assert stats["queued"] == 3 and stats["delivered"] == 3 and stats["failed"] == stats["dropped"] == 0
    assert not (tmp_path / "events.sqlite3").exists()


def test_before_send_runs_as_in_delivery(tmp_path: Path) -> None:
    def hook(message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("event") == "Internal":
            return None
        message["properties"]["enriched"] = True
        return message

    rt = Runtime(Settings(local_store=str(tmp_path / "s.sqlite3"), before_send=(hook,)))
    with capture() as events:
        rt.tracker(user_id=1).track("Internal")
        rt.tracker(user_id=1).track("Shown", {"a": 1})
    assert [m["event"] for m in events] == ["Shown"]
    assert events[0]["properties"] == {"a": 1, "enriched": True}
    assert rt.delivery.stats()["dropped"] == 1


def test_captures_nest_and_delivery_comes_back(runtime: Runtime) -> None:
    tracker = runtime.tracker(user_id=1)
    with capture() as outer:
        tracker.track("A")
        with capture() as inner:
            tracker.track("B")
        tracker.track("C")
    tracker.track("D")  # after both: queued for delivery again
    assert [m["event"] for m in outer] == ["A", "C"] and [m["event"] for m in inner] == ["B"]
    assert runtime.delivery.pending == 1 and runtime.delivery.flush(10)


def test_assert_sent_matches_nested_subsets_and_lists_what_was_sent(runtime: Runtime) -> None:
    with capture() as events:
        properties = {"order_id": "o-9", "total": 10, "meta": {"a": 1}}
        runtime.tracker(user_id=5).track("Order Completed", properties)
        runtime.tracker(user_id=5).page("Home")
    found = events.assert_sent("track", properties={"meta": {"a": 1}}, userId="5")
    assert found["event"] == "Order Completed"
    assert events.assert_sent(name="Home")["type"] == "page"
    with pytest.raises(AssertionError) as failed:
        events.assert_sent("track", event="Order Completed", properties={"order_id": "o-1"})
    assert str(failed.value) == (
        "no track with event='Order Completed', properties={'order_id': 'o-1'} was sent; "
        "sent: [track 'Order Completed', page 'Home']"
    )
    with pytest.raises(AssertionError, match=r"expected no messages; sent: \[track 'Order Completed'"):
        events.assert_nothing_sent()
    events.clear()
    events.assert_nothing_sent()
    assert repr(events) == "<CapturedEvents []>"
