"""The collection routes' framework-neutral core (``collect.handle``) and COLLECT_RATE_LIMIT's
token buckets, in process: the settings that change what a route accepts or sends
(BROWSER_WRITE_KEY, TRUSTED_PROXIES, ANONYMIZE_IP, CONSENT, SHOULD_TRACK, PLAN_VIOLATIONS)
and the lazy hand-over to ``sources``. Each framework's adapter is tested under a real
server in test_collect_servers.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segment_middleware.collect import CollectRequest, handle
from segment_middleware.core import Runtime
from segment_middleware.ratelimit import Rate, TokenBuckets, parse_rate_limit
from segment_middleware.settings import Settings, SettingsError
from segment_middleware.testing import capture

KEY = "browser-key-0123"


@pytest.fixture
def make_runtime(store_path: str) -> Iterator[Any]:
    made: list[Runtime] = []

    def make(**settings: Any) -> Runtime:
        rt = Runtime(Settings.from_sources({"local_store": store_path, **settings}, environ={}))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.delivery.shutdown(2)


def request(route: str, body: Any, *, user: str | None = None, **headers: str) -> CollectRequest:
    sent = {
        "cookie": "ajs_anonymous_id=anon-1",
        "referer": "https://shop.example/p?q=1",
        "host": "shop.example",
    }
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return CollectRequest(
        method="POST",
        route=route,
        headers=sent,
        body=body if isinstance(body, bytes) else json.dumps(body).encode(),
        scheme="https",
        path=f"/segment/{route}",
        query="",
        remote_addr="10.0.0.5",
        user_id=lambda: user,
        request=SimpleNamespace(headers=sent),  # what SHOULD_TRACK and CONSENT are given
    )


def test_the_browser_key_is_browser_write_key_else_write_key(make_runtime: Any) -> None:
    rt = make_runtime(write_key="server-key-0123", browser_write_key=KEY)
    with capture() as events:
        assert handle(rt, request("v1/t", {"event": "A", "writeKey": KEY})).status == 200
        assert handle(rt, request("v1/t", {"event": "B", "writeKey": "server-key-0123"})).status == 401
        answer = handle(rt, request("v1/t", {"event": "C", "writeKey": "wrong"}))
    assert answer.status == 401 and KEY not in answer.content.decode()
    assert [e["event"] for e in events] == ["A"]
    no_keys = make_runtime()  # the local store: no key to hold bodies to
    with capture() as events:
        assert handle(no_keys, request("v1/t", {"event": "D"})).status == 200
    assert [e["event"] for e in events] == ["D"]


def test_ip_the_servers_way(make_runtime: Any) -> None:
    rt = make_runtime(trusted_proxies=["10.0.0.0/8"], anonymize_ip=True)
    with capture() as events:
        body = {"event": "A", "context": {"ip": "6.6.6.6"}}
        assert handle(rt, request("v1/t", body, x_forwarded_for="203.0.113.77")).status == 200
    assert events[0]["context"]["ip"] == "203.0.113.0"


def test_consent_and_should_track_are_the_servers(make_runtime: Any) -> None:
    rt = make_runtime(
        consent=lambda req: {"analytics": True, "ads": False},
        should_track=lambda req: req.headers.get("x-bot") is None,
    )
    with capture() as events:
        body = {"event": "A", "context": {"consent": {"categoryPreferences": {"ads": True}}}}
        assert handle(rt, request("v1/t", body)).status == 200
        assert handle(rt, request("v1/t", {"event": "Bot"}, x_bot="1")).status == 200  # answered, not sent
        assert handle(rt, request("v1/t", {"event": "Dnt"}, dnt="1")).status == 200  # HONOR_DNT off: sent
    assert [e["event"] for e in events] == ["A", "Dnt"]
    assert events[0]["context"]["consent"] == {"categoryPreferences": {"analytics": True, "ads": False}}


def test_a_plan_that_raises_refuses_the_whole_request(make_runtime: Any, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "allow_unplanned_events": True,
                "events": {"Order Completed": {"type": "object", "required": ["order_id"]}},
            }
        )
    )
    rt = make_runtime(tracking_plan=str(plan), plan_violations="raise")
    batch = {"batch": [{"type": "track", "event": "Fine"}, {"type": "track", "event": "Order Completed"}]}
    with capture() as events:
        answer = handle(rt, request("v1/b", batch))
    assert answer.status == 400 and answer.body["field"] == "batch[1].properties"
    assert "order_id" in answer.body["error"]
    assert list(events) == [], "all or nothing: the first event was not sent either"


def test_the_userid_is_the_servers_and_alias_needs_one(make_runtime: Any) -> None:
    rt = make_runtime()
    with capture() as events:
        assert handle(rt, request("v1/i", {"userId": "mallory", "traits": {"a": 1}}, user="7")).status == 200
        assert handle(rt, request("v1/i", {"userId": "mallory", "traits": {"a": 2}})).status == 200
        refused = handle(rt, request("v1/a", {"userId": "mallory", "previousId": "x"}))
        assert handle(rt, request("v1/a", {"userId": "mallory", "previousId": "x"}, user="7")).status == 200
    assert refused.status == 400 and refused.body["field"] == "userId"
    assert [(e["type"], e.get("userId"), e.get("anonymousId")) for e in events] == [
        ("identify", "7", "anon-1"),
        ("identify", None, "anon-1"),
        ("alias", "7", None),
    ]
    assert events[2]["previousId"] == "anon-1"


def test_sources_are_handed_over_lazily_and_404_without_the_module(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_runtime()
    monkeypatch.setitem(sys.modules, "segment_middleware.sources", None)  # as if not written yet
    monkeypatch.delattr("segment_middleware.sources", raising=False)
    answer = handle(rt, request("sources/payments", b"{}"))
    assert answer.status == 404


def test_batch_items_of_any_shape_are_named_not_a_500(make_runtime: Any) -> None:
    rt = make_runtime()
    for item, field in (
        ({"type": {}}, "batch[0].type"),
        ([], "batch[0]"),
        ({"type": ["track"]}, "batch[0].type"),
    ):
        answer = handle(rt, request("v1/b", {"batch": [item]}))
        assert (answer.status, answer.body["field"]) == (400, field)


def test_a_request_with_no_visitor_at_all_is_refused(make_runtime: Any) -> None:
    rt = make_runtime(collect_rate_limit=None)
    req = request("v1/t", {"event": "A"})
    req.headers = {"host": "shop.example"}
    answer = handle(rt, req)
    assert answer.status == 400 and answer.body["field"] == "anonymousId"


# ---------------------------------------------------------------------- the rate limit
def test_rate_limit_forms() -> None:
    assert parse_rate_limit("20/s burst 200") == Rate(20.0, 200)
    assert parse_rate_limit("600/m") == Rate(10.0, 10)
    assert parse_rate_limit("10/h") == Rate(10 / 3600, 1)
    assert parse_rate_limit(None) is None and parse_rate_limit("") is None and parse_rate_limit(False) is None
    for bad in ("fast", "0/s", "5/fortnight", 20, "5/s burst 0"):
        with pytest.raises(ValueError):
            parse_rate_limit(bad)
    with pytest.raises(SettingsError, match=r"^SEGMENT_COLLECT_RATE_LIMIT: "):
        Settings.from_sources(None, {"collect_rate_limit": "lots"}, style="flask", environ={})


def test_token_buckets_burst_refill_and_forget() -> None:
    now = [0.0]
    buckets = TokenBuckets(Rate(2.0, 5), max_keys=3, clock=lambda: now[0])
    assert buckets.take("a", 5) == 0.0  # the burst
    assert buckets.take("a") == pytest.approx(0.5)  # empty: one token in half a second
    assert buckets.take("b", 5) == 0.0, "each visitor has their own bucket"
    now[0] = 1.0  # two tokens back
    assert buckets.take("a", 2) == 0.0 and buckets.take("a") > 0
    assert buckets.take("a", 50) == pytest.approx(2.5), "a batch over the burst waits for a full bucket"
    for key in "cde":  # past max_keys the least recently used is forgotten
        buckets.take(key)
    assert buckets.take("a", 5) == 0.0, "a forgotten visitor starts with a full bucket"


# ---------------------------------------------------------------------- jsonable's fast path
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.decimals(allow_nan=True)
    | st.sampled_from([IntEnum("N", "A")(1)]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=3) | st.integers() | st.booleans(), inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_jsonable_fast_path_is_the_named_path(value: Any) -> None:
    """Bodies the collection routes take are plain JSON: jsonable copies them without
    building a name per item; whatever it gives or raises is what the named path does."""
    from segment_middleware import jsonable as module

    def outcome(fn: Any) -> Any:
        try:
            return ("ok", json.dumps(fn(), sort_keys=True, default=str))
        except (TypeError, ValueError) as exc:
            return (type(exc).__name__, str(exc))

    assert outcome(lambda: module.jsonable(value, "p")) == outcome(lambda: module._named(value, "p", 0))
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    assert outcome(lambda: module.jsonable(deep, "p")) == outcome(lambda: module._named(deep, "p", 0))


def test_flask_wtf_csrf_holds_for_the_json_calls_not_for_analytics_js(tmp_path: Path) -> None:
    """With Flask-WTF's CSRFProtect set up before the blueprint is registered, analytics.js's
    posts and webhooks are exempt (they carry no authority) and the JSON calls keep it."""
    pytest.importorskip("flask_wtf")
    from flask import Flask, g
    from flask_wtf.csrf import CSRFProtect, generate_csrf

    from segment_middleware.flask import Segment, collect_blueprint

    app = Flask("csrf_shop")
    app.config.update(SECRET_KEY="test-only", SEGMENT_LOCAL_STORE=str(tmp_path / "s.sqlite3"))
    Segment(app)
    CSRFProtect(app)

    @app.before_request
    def sign_in() -> None:
        g.user = SimpleNamespace(id=42, is_authenticated=True)

    @app.get("/token")
    def token() -> str:
        return generate_csrf()

    app.register_blueprint(collect_blueprint, url_prefix="/segment")
    client = app.test_client()
    browser = json.dumps({"type": "track", "event": "From The Browser", "anonymousId": "a-1"})
    own = json.dumps({"event": "From A Form"})
    with capture() as events:
        assert client.post("/segment/v1/t", data=browser, content_type="text/plain").status_code == 200
        refused = client.post("/segment/track", data=own, content_type="application/json")
        assert refused.status_code == 400 and b"CSRF" in refused.data
        csrf = client.get("/token").get_data(as_text=True)
        sent = client.post(
            "/segment/track", data=own, content_type="application/json", headers={"X-CSRFToken": csrf}
        )
        assert sent.status_code == 200, sent.data
    assert [e["event"] for e in events if e["type"] == "track"] == ["From The Browser", "From A Form"]
    assert {e.get("userId") for e in events if e["type"] == "track"} == {"42"}
