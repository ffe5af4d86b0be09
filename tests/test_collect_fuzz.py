"""Arbitrary bodies to every collection route, under a real server: never a 500, and nothing
the routes accept ever reaches the endpoint over Segment's limits (32 KB a message, 500 KB
a batch) or with a userId the server did not give.

Hypothesis draws the route, the body (random bytes, any JSON, events with fields of any
type and size, batches of them) and the visitor (cookie or not, signed in or not). One
server per framework for the whole run (FastAPI under uvicorn; Flask, Django and the plain
WSGI app under gunicorn); the rate limit is off so that every body is judged on its content.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import WRITE_KEY
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from segment_receiver import MAX_BATCH_BYTES, SegmentReceiver
from servers import ROOT, Server, gunicorn, uvicorn

APPS = ROOT / "tests" / "apps"
ROUTES = [
    *(f"v1/{k}" for k in "tpigasb"),
    "identify",
    "track",
    "page",
    "group",
    "alias",
    "flush",
    "v1/x",
    "nope",
]
ANSWERS = {200, 400, 401, 403, 404, 405, 413, 415}
# Events each server answered 200 for, by its port: all of them must be delivered.
ACCEPTED: Counter[int] = Counter()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Sizes around the 32 KB limit too: a body just under it that enrichment would push over.
big_text = (st.integers(0, 40_000) | st.integers(31_000, 32 * 1024)).map(lambda n: "x" * n)
anything = json_values | big_text
properties = st.dictionaries(st.text(max_size=10), json_values | big_text, max_size=4)
KIND_OF = {"t": "track", "p": "page", "i": "identify", "g": "group", "a": "alias", "s": "screen"}
# The fields of each call, with values of their own type (see collect._CALL_FIELDS).
OWN = {
    "track": {"event": st.text(min_size=1, max_size=30), "properties": properties},
    "page": {"name": st.text(max_size=30), "category": st.text(max_size=30), "properties": properties},
    "screen": {"name": st.text(max_size=30), "properties": properties},
    "identify": {"traits": properties},
    "group": {"groupId": st.text(min_size=1, max_size=30) | st.integers(), "traits": properties},
    "alias": {"previousId": st.text(max_size=30)},
}
COMMON = {
    "userId": st.just("someone-else"),
    "anonymousId": st.text(max_size=120),
    "context": st.fixed_dictionaries(
        {},
        optional={
            "ip": st.just("6.6.6.6"),
            "page": properties,
            "userAgent": st.text(max_size=20),
            "x": anything,
        },
    ),
    "integrations": st.dictionaries(st.text(max_size=10), st.booleans(), max_size=3),
    "timestamp": st.sampled_from(["2026-01-01T00:00:00.000Z", "2030-01-01T00:00:00+02:00", "yesterday"]),
    "messageId": st.text(max_size=300),
}
BROWSER_ONLY = {
    "sentAt": st.sampled_from(["2026-01-01T00:00:01.000Z", "soon"]),
    "_metadata": st.dictionaries(st.text(max_size=10), anything, max_size=3),
    "writeKey": st.just(WRITE_KEY),
}
mutations = st.dictionaries(
    st.sampled_from(
        [*COMMON, *BROWSER_ONLY, "event", "name", "groupId", "properties", "traits", "type", "other"]
    ),
    anything,
    max_size=2,
)


@st.composite
def event_for(draw: st.DrawFn, kind: str, browser: bool) -> dict[str, Any]:
    """A mostly well-formed event of ``kind``, sometimes with a field of any type or size."""
    optional = {**OWN[kind], **COMMON, **(BROWSER_ONLY if browser else {})}
    event = draw(st.fixed_dictionaries({}, optional=optional))
    if browser:
        event["type"] = kind
        if draw(st.integers(0, 9)):
            event["writeKey"] = WRITE_KEY
    if draw(st.integers(0, 2)) == 0:
        event.update(draw(mutations))
    return event


@st.composite
def body_for(draw: st.DrawFn, route: str) -> bytes:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:
        return json.dumps(draw(json_values)).encode()
    if route == "v1/b":
        kinds = st.sampled_from(sorted(OWN))
        batch = draw(st.lists(kinds.flatmap(lambda k: event_for(k, True)), max_size=30))
        return json.dumps({"batch": batch, "writeKey": WRITE_KEY, "sentAt": "2026-01-01T00:00:01Z"}).encode()
    if route.startswith("v1/") and route[3:] in KIND_OF:
        return json.dumps(draw(event_for(KIND_OF[route[3:]], True))).encode()
    if route in OWN:
        return json.dumps(draw(event_for(route, False))).encode()
    return json.dumps(draw(json_values)).encode()


# Django's CSRF rules hold for the JSON calls: the fuzzed posts carry a valid token pair
# (cookie and header), so that what is fuzzed is the body, not Django's CSRF check.
CSRF = "f" * 32
SERVER_APP: dict[int, str] = {}  # port -> the framework it serves


def csrf_for(server: Server) -> tuple[str | None, dict[str, str]]:
    """(a cookie to add, headers to add) for posts to this server."""
    if SERVER_APP.get(server.port) == "django":
        return f"csrftoken={CSRF}", {"X-CSRFToken": CSRF}
    return None, {}


@pytest.fixture(scope="module", params=["fastapi", "flask", "django", "wsgi"])
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, SegmentReceiver]]:
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with SegmentReceiver(WRITE_KEY) as receiver:
        env = {
            "SEGMENT_WRITE_KEY": WRITE_KEY,
            "SEGMENT_HOST": receiver.url,
            "SEGMENT_LOCAL_STORE": str(tmp / "store.sqlite3"),
            "TEST_TMP": str(tmp),
            "TEST_COLLECT_APP": request.param,
            "TEST_RATE_LIMIT": "",
            "TEST_FLUSH_INTERVAL": "0.5",
        }
        if request.param == "fastapi":
            server = uvicorn("collect_apps:fastapi_app", env, app_dir=APPS)
        elif request.param == "django":
            server = gunicorn("collect_dj.wsgi:application", env, "--worker-class", "gthread", chdir=APPS)
        elif request.param == "wsgi":
            server = gunicorn("collect_apps:wsgi_app", env, "--worker-class", "gthread", chdir=APPS)
        else:
            server = gunicorn("collect_apps:flask_app", env, "--worker-class", "gthread", chdir=APPS)
        try:
            server.wait_ready()
            SERVER_APP[server.port] = request.param
            yield server, receiver
            # Every event the routes accepted could be sent: none failed the sender's own
            # 32 KB check (the routes answer 413 for those instead of accepting them).
            cookie, extra = csrf_for(server)
            staff = {"X-Test-User": "staff:1", **extra, **({"Cookie": cookie} if cookie else {})}
            flushed = server.request("POST", "/segment/flush", staff, b"")
            assert flushed.status == 200 and json.loads(flushed.body)["flushed"] is True
            stats = json.loads(server.get("/stats").body)
            accepted = ACCEPTED[server.port]
            assert accepted > 0, "no body was accepted: the run checked nothing"
            assert stats["failed"] == stats["dropped"] == 0 and stats["delivered"] == accepted, stats
            assert server.stop() in (0, -15), server.output()
            check_received(receiver)
        finally:
            server.kill()


def check_received(receiver: SegmentReceiver) -> None:
    """Everything that reached the endpoint is within Segment's limits, and its userId is
    the server's (the visitor's header user ``42``) or none."""
    for req in receiver.requests:
        assert req.status == 200, (req.status, req.body and str(req.body)[:300])
    for m in receiver.messages:
        assert len(json.dumps(m, separators=(",", ":")).encode()) <= 32 * 1024
        assert m.get("userId") in (None, "42"), m.get("userId")
        assert "ip" in m["context"] and m["context"]["ip"] == "127.0.0.1"
    assert all(len(json.dumps(r.body).encode()) <= MAX_BATCH_BYTES for r in receiver.requests if r.body)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    data=st.data(),
    route=st.sampled_from(ROUTES),
    cookie=st.sampled_from([None, "ajs_anonymous_id=fuzz-visitor", "ajs_anonymous_id=%22x%22; other=1"]),
    user=st.sampled_from([None, "42"]),
    content_type=st.sampled_from(["text/plain", "application/json", "application/json"]),
)
def test_arbitrary_bodies_never_fail_the_server(
    fuzzed: tuple[Server, SegmentReceiver],
    data: st.DataObject,
    route: str,
    cookie: str | None,
    user: str | None,
    content_type: str,
) -> None:
    server, _ = fuzzed
    body = data.draw(body_for(route))
    headers: dict[str, Any] = {"Content-Type": content_type, "Referer": "http://127.0.0.1/fuzz"}
    csrf_cookie, csrf_headers = csrf_for(server)
    headers.update(csrf_headers)
    cookie = "; ".join(c for c in (cookie, csrf_cookie) if c) or None
    if cookie is not None:
        headers["Cookie"] = cookie
    if user is not None:
        headers["X-Test-User"] = user
    response = server.request("POST", f"/segment/{route}", headers, body)
    assert response.status in ANSWERS, (response.status, response.body[:300], server.output()[-2000:])
    assert response.status != 200 or route in ROUTES[:-2]
    event(f"{route.split('/')[0]} {response.status} {json.loads(response.body).get('field', '')}")
    answer = json.loads(response.body)
    if response.status == 200 and route != "flush":
        ACCEPTED[server.port] += len(json.loads(body)["batch"]) if route == "v1/b" else 1
    if response.status >= 400:
        assert answer["success"] is False and isinstance(answer["error"], str)
