"""The tracker: its calls, their checks and options, JSON conversion, the wire message."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest
from helpers import WRITE_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segment_receiver import SegmentReceiver
from units import QUICK, facts, stored

from segment_middleware.core import Runtime
from segment_middleware.jsonable import jsonable
from segment_middleware.settings import Settings
from segment_middleware.store import Store
from segment_middleware.tracker import Tracker


def test_calls_fill_ids_context_and_message_fields(local_runtime: Runtime) -> None:
    t = local_runtime.tracker(user_id="u1", anonymous_id="a1")
    t.track("Signed Up", {"plan": "pro"})
    t.page("Pricing", {"tier": 2}, category="Docs")
    t.screen("Home", {"x": 1})
    t.group(42, {"name": "Acme"})
    t.identify(traits={"email": "x@example.com"})
    msgs = stored(local_runtime)
    assert [m["type"] for m in msgs] == ["track", "page", "screen", "group", "identify"]
    for m in msgs:
        assert m["userId"] == "u1" and m["anonymousId"] == "a1"
        assert m["context"]["library"]["name"] == "segment-middleware"
        assert uuid.UUID(m["messageId"]).version == 4
        assert dt.datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert msgs[0]["event"] == "Signed Up" and msgs[0]["properties"] == {"plan": "pro"}
    assert (msgs[1]["name"], msgs[1]["category"], msgs[1]["properties"]) == ("Pricing", "Docs", {"tier": 2})
    assert msgs[2]["name"] == "Home"
    assert msgs[3]["groupId"] == "42" and msgs[3]["traits"] == {"name": "Acme"}
    assert msgs[4]["traits"] == {"email": "x@example.com"}
    assert len({m["messageId"] for m in msgs}) == 5


def test_identify_switches_the_user_for_later_calls_and_alias_defaults(local_runtime: Runtime) -> None:
    t = local_runtime.tracker(anonymous_id="anon-1")
    t.track("Before Login")
    t.identify("user-9", {"plan": "free"})
    t.track("After Login")
    t.alias("user-10")
    msgs = stored(local_runtime)
    before, identify, after, alias = msgs
    assert "userId" not in before and before["anonymousId"] == "anon-1"
    assert identify["userId"] == "user-9" and identify["anonymousId"] == "anon-1"
    assert after["userId"] == "user-9" and after["anonymousId"] == "anon-1"
    assert t.user_id == "user-9"
    assert alias["type"] == "alias" and alias["userId"] == "user-10" and alias["previousId"] == "anon-1"
    assert "anonymousId" not in alias


def test_request_tracker_shares_the_request_context(local_runtime: Runtime) -> None:
    f = facts(path="/checkout", query="utm_source=ads", user_agent="ua-1", accept_language="en-GB")
    t = local_runtime.begin(
        None,
        f,
        "ajs_anonymous_id=%22visitor%22",
        None,
        user_resolver=lambda: local_runtime.user_lookup(lambda r: 77)(None),
    )
    t.title = "Checkout"
    t.track("Checkout Started", {"value": Decimal("9.90")})
    local_runtime.end(t, 200, "checkout")
    track, page = stored(local_runtime)
    for m in (track, page):
        assert m["anonymousId"] == "visitor"
        assert m["context"]["userAgent"] == "ua-1" and m["context"]["locale"] == "en-GB"
        assert m["context"]["campaign"] == {"source": "ads"}
        assert m["context"]["page"]["path"] == "/checkout"
    assert track["userId"] == page["userId"] == "77"  # always a string
    assert track["properties"] == {"value": 9.9}
    assert page["properties"]["title"] == "Checkout" and page["properties"]["status"] == 200


def test_options_context_integrations_timestamp_message_id(local_runtime: Runtime) -> None:
    t = local_runtime.tracker(user_id="u1")
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    t.track(
        "With Options",
        context={"ip": "1.2.3.4", "library": {"extra": True}},
        integrations={"Mixpanel": False},
        timestamp=when,
        message_id="fixed-id-1",
    )
    (m,) = stored(local_runtime)
    assert m["messageId"] == "fixed-id-1"
    assert m["timestamp"] == "2026-01-02T03:04:05+00:00"
    assert m["integrations"] == {"Mixpanel": False}
    assert m["context"]["ip"] == "1.2.3.4"
    assert m["context"]["library"]["name"] == "segment-middleware" and m["context"]["library"]["extra"]


class Color(enum.Enum):
    RED = "red"


def test_values_are_converted_to_json(local_runtime: Runtime) -> None:
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    t = local_runtime.tracker(user_id="u1")
    t.track(
        "Converted",
        {
            "price": Decimal("19.99"),
            "qty": Decimal("3"),
            "at": dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc),
            "day": dt.date(2026, 1, 1),
            "id": uid,
            "color": Color.RED,
            "tags": {"b", "a"},
            "tuple": (1, 2),
            1: "int key",
            False: "bool key",
        },
    )
    (m,) = stored(local_runtime)
    assert m["properties"] == {
        "price": 19.99,
        "qty": 3,
        "at": "2026-01-01T12:00:00+00:00",
        "day": "2026-01-01",
        "id": str(uid),
        "color": "red",
        "tags": ["a", "b"],
        "tuple": [1, 2],
        "1": "int key",
        "false": "bool key",
    }


def test_unserializable_values_raise_at_the_call_and_queue_nothing(local_runtime: Runtime) -> None:
    t = local_runtime.tracker(user_id="u1")
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    cases: list[tuple[Any, type[Exception], str]] = [
        (lambda: t.track("E", {"obj": object()}), TypeError, "properties['obj']: object"),
        (lambda: t.track("E", {"nested": {"f": lambda: 1}}), TypeError, "properties['nested']['f']"),
        (lambda: t.track("E", {"n": math.nan}), ValueError, "properties['n']"),
        (lambda: t.track("E", {"d": Decimal("Infinity")}), ValueError, "properties['d']"),
        (lambda: t.track("E", cycle), ValueError, "nested deeper"),
        (lambda: t.track("E", {("tuple", "key"): 1}), TypeError, "keys must be strings"),
        (lambda: t.track("E", ["not", "a", "mapping"]), TypeError, "properties must be a mapping"),
        (lambda: t.identify("u2", {"b": b"bytes"}), TypeError, "traits['b']: bytes"),
        (lambda: t.group("g", {"x": {1, object()}}), TypeError, "traits['x']"),
        (lambda: t.track(""), ValueError, "event must be a non-empty string"),
        (lambda: t.track(None), TypeError, "event must be a non-empty string"),
        (lambda: t.group(None), TypeError, "group_id"),
        (lambda: t.group(""), ValueError, "group_id"),
        (lambda: t.identify(True), TypeError, "user_id"),
        (lambda: t.page(name=""), ValueError, "name"),
        (lambda: t.track("E", timestamp="yesterday"), TypeError, "timestamp must be a datetime"),
        (lambda: t.track("E", bogus=1), TypeError, "unexpected option 'bogus'"),
        (lambda: t.track("E", context=[1]), TypeError, "context must be a mapping"),
    ]
    for call, error, fragment in cases:
        with pytest.raises(error) as info:
            call()
        assert fragment in str(info.value), (fragment, str(info.value))
    assert t.user_id == "u1"  # a failed identify did not switch the user
    assert local_runtime.delivery.stats()["queued"] == 0
    assert stored(local_runtime) == []


def test_a_tracker_needs_some_id(local_runtime: Runtime) -> None:
    t = local_runtime.tracker()
    with pytest.raises(ValueError, match="no userId or anonymousId"):
        t.track("E")
    with pytest.raises(ValueError, match="alias needs previous_id"):
        t.alias("u1")
    with pytest.raises(ValueError):
        local_runtime.tracker(user_id="")
    t.alias("u1", "old-id")  # an explicit previous id is enough for alias
    (m,) = stored(local_runtime)
    assert (m["userId"], m["previousId"]) == ("u1", "old-id")


def test_user_resolver_errors_mean_anonymous(local_runtime: Runtime) -> None:
    def broken() -> str:
        raise RuntimeError("auth backend down")

    t = Tracker(local_runtime.sink, anonymous_id="a1", user_resolver=broken)
    t.track("E")
    (m,) = stored(local_runtime)
    assert "userId" not in m and m["anonymousId"] == "a1"


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)


@QUICK
@given(value=_JSON)
def test_jsonable_keeps_json_data_unchanged(value: Any) -> None:
    assert jsonable(value) == value
    assert json.loads(json.dumps(jsonable(value))) == value


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    event=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != ""),
    props=st.dictionaries(st.text(max_size=8), _JSON, max_size=4),
)
def test_tracked_properties_arrive_in_the_store_unchanged(
    local_runtime: Runtime, event: str, props: dict[str, Any]
) -> None:
    marker = uuid.uuid4().hex
    local_runtime.tracker(user_id=marker).track(event, props)
    assert local_runtime.delivery.flush(10)
    store = Store(local_runtime.settings.local_store)
    try:
        (row,) = store.events(user=marker)
    finally:
        store.close()
    assert row.event == event and row.message["event"] == event
    assert row.message["properties"] == props


def test_tracker_delivers_over_http(receiver: SegmentReceiver, store_path: str) -> None:
    rt = Runtime(
        Settings.from_sources(
            {"write_key": WRITE_KEY, "host": receiver.url, "local_store": store_path, "flush_interval": 0.05},
            environ={},
        )
    )
    try:
        t = rt.tracker(anonymous_id="anon-http")
        t.identify("user-http", {"name": "Ann"})
        t.track("Over HTTP", {"n": 1})
        assert rt.delivery.flush(10)
        identify, track = receiver.wait_for(2)
    finally:
        rt.delivery.shutdown(2)
    assert identify["type"] == "identify" and identify["traits"] == {"name": "Ann"}
    assert track["userId"] == "user-http" and track["anonymousId"] == "anon-http"
    assert track["properties"] == {"n": 1}
    assert rt.delivery.stats()["delivered"] == 2


def test_tracker_arguments_are_checked_naming_the_field(local_runtime: Runtime) -> None:
    with pytest.raises(TypeError, match=r"^anonymous_id must be"):
        local_runtime.tracker(anonymous_id=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^user_id must be"):
        local_runtime.tracker(user_id=[1])
