"""``request.segment.profile``: traits and audiences from a Profile-API-compatible receiver
on 127.0.0.1 (``profile_receiver``), within PROFILE_TIMEOUT, cached, never raising.

Fast, slow (over the budget: None, and the request is not slowed beyond it), failing and
unreachable APIs; the cache (hits, TTL, one fetch shared by concurrent lookups); the async
twins on an event loop; real Flask and Starlette apps whose views read the profile.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until
from profile_receiver import ProfileReceiver

from segment_middleware import profiles
from segment_middleware.core import Runtime
from segment_middleware.settings import Settings, SettingsError
from segment_middleware.tracker import untracked

SPACE = "spa_test1"
TOKEN = "profiles-secret-token-0123456789"  # a test token
ALICE = {"first_name": "Alice", "plan": "pro", "orders_last_30_days": 3}


@pytest.fixture
def api() -> Iterator[ProfileReceiver]:
    with ProfileReceiver(SPACE, TOKEN) as server:
        server.traits["user_id:u1"] = dict(ALICE)
        server.audiences["user_id:u1"] = {"big_spenders": True, "churn_risk": False}
        server.traits["anonymous_id:anon-7"] = {"first_seen": "2026-12-01"}
        yield server


def _runtime(store_path: str, api: ProfileReceiver | None, **extra: Any) -> Runtime:
    config: dict[str, Any] = {
        "local_store": store_path,
        "space_id": SPACE,
        "profiles_token": TOKEN,
        "profiles_host": api.url if api is not None else "http://127.0.0.1:9",
        "profile_timeout": 0.5,
    }
    return Runtime(Settings.from_sources({**config, **extra}, environ={}))


@pytest.fixture
def runtime(store_path: str, api: ProfileReceiver) -> Iterator[Runtime]:
    rt = _runtime(store_path, api)
    yield rt
    rt.delivery.shutdown(2)


@pytest.fixture(autouse=True)
def _token_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every scenario of this module: the token appears in no log line (at any level)."""
    caplog.set_level(logging.DEBUG)
    yield
    assert TOKEN not in caplog.text
    assert base64.b64encode(f"{TOKEN}:".encode()).decode() not in caplog.text


def _profile_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "segment_middleware" and "rofile" in r.getMessage()
    ]


# ---------------------------------------------------------------------- a fast API
def test_traits_and_audiences_of_the_user(runtime: Runtime, api: ProfileReceiver) -> None:
    profile = runtime.tracker(user_id="u1", anonymous_id="anon-1").profile
    assert profile.traits() == {**ALICE, "big_spenders": True, "churn_risk": False}
    assert profile.audiences() == frozenset({"big_spenders"})  # one left: not in the set
    first, second = api.requests()
    assert first.path == f"/v1/spaces/{SPACE}/collections/users/profiles/user_id:u1/traits"
    assert first.query == {"limit": ["200"]} and second.query == {"limit": ["200"], "class": ["audience"]}
    expected = "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()
    assert first.authorization == expected and first.status == second.status == 200


def test_an_anonymous_visitor_is_looked_up_by_anonymous_id(runtime: Runtime, api: ProfileReceiver) -> None:
    assert runtime.tracker(anonymous_id="anon-7").profile.traits() == {"first_seen": "2026-12-01"}
    assert api.requests()[0].path.endswith("/profiles/anonymous_id:anon-7/traits")


def test_ids_are_escaped_in_the_url(runtime: Runtime, api: ProfileReceiver) -> None:
    api.traits["user_id:+15555550123/x?y"] = {"ok": True}
    assert runtime.tracker(user_id="+15555550123/x?y").profile.traits() == {"ok": True}


def test_no_profile_is_empty_and_cached(runtime: Runtime, api: ProfileReceiver) -> None:
    profile = runtime.tracker(user_id="nobody").profile
    assert profile.traits() == {} and profile.audiences() == frozenset()
    assert profile.traits() == {} and len(api.requests()) == 2


def test_an_untracked_request_has_no_profile(runtime: Runtime, api: ProfileReceiver) -> None:
    assert untracked().profile.traits() is None and untracked().profile.audiences() is None
    assert api.requests() == []


# ---------------------------------------------------------------------- the cache
def test_answers_are_cached_per_process(runtime: Runtime, api: ProfileReceiver) -> None:
    for _ in range(3):
        traits = runtime.tracker(user_id="u1").profile.traits()
        assert traits is not None and traits["plan"] == "pro"
        traits["plan"] = "changed by a view"  # a view's copy: the cache keeps its own
    assert len(api.requests()) == 1


def test_the_cache_expires_after_its_ttl(store_path: str, api: ProfileReceiver) -> None:
    rt = _runtime(store_path, api, profile_cache_ttl=0.3)
    try:
        assert rt.tracker(user_id="u1").profile.traits() == {
            **ALICE,
            "big_spenders": True,
            "churn_risk": False,
        }
        api.traits["user_id:u1"]["plan"] = "enterprise"
        assert rt.tracker(user_id="u1").profile.traits()["plan"] == "pro"  # type: ignore[index]
        wait_until(
            lambda: rt.tracker(user_id="u1").profile.traits()["plan"] == "enterprise",  # type: ignore[index]
            "the cached traits to expire",
            5,
        )
    finally:
        rt.delivery.shutdown(2)


def test_a_zero_ttl_keeps_nothing(store_path: str, api: ProfileReceiver) -> None:
    rt = _runtime(store_path, api, profile_cache_ttl=0)
    try:
        rt.tracker(user_id="u1").profile.traits()
        rt.tracker(user_id="u1").profile.traits()
        assert len(api.requests()) == 2
    finally:
        rt.delivery.shutdown(2)


def test_concurrent_lookups_of_one_visitor_share_one_fetch(store_path: str, api: ProfileReceiver) -> None:
    api.delay = 0.2
    rt = _runtime(store_path, api, profile_timeout=5)
    results: list[Any] = []
    try:
        threads = [
            threading.Thread(target=lambda: results.append(rt.tracker(user_id="u1").profile.traits()))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 8 and all(r == results[0] and r for r in results)
        assert len(api.requests()) == 1
    finally:
        rt.delivery.shutdown(2)


# ---------------------------------------------------------------------- a slow API
def test_over_the_budget_none_then_the_late_answer_is_cached(
    store_path: str, api: ProfileReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    api.delay = 0.6
    rt = _runtime(store_path, api, profile_timeout=0.1)
    try:
        started = time.monotonic()
        assert rt.tracker(user_id="u1").profile.traits() is None
        assert rt.tracker(user_id="u1").profile.traits() is None  # the same fetch, still late
        assert time.monotonic() - started < 0.2 + 0.25  # two budgets and some scheduling slack
        assert len(_profile_lines(caplog)) == 1 and "PROFILE_TIMEOUT" in caplog.text
        api.delay = 0
        wait_until(lambda: rt.tracker(user_id="u1").profile.traits() is not None, "the late answer", 5)
        assert len(api.requests()) == 1  # the late answer filled the cache
    finally:
        rt.delivery.shutdown(2)


# ---------------------------------------------------------------------- a failing API
@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_failing_api_gives_none_logs_once_and_backs_off(
    store_path: str, api: ProfileReceiver, caplog: pytest.LogCaptureFixture, status: int, monkeypatch: Any
) -> None:
    monkeypatch.setattr(profiles, "BACKOFF", 0.3)
    rt = _runtime(store_path, api)
    try:
        api.fail_next(1, status)
        assert rt.tracker(user_id="u1").profile.traits() is None
        assert rt.tracker(user_id="u2").profile.traits() is None  # backing off: not even asked
        assert len(api.requests()) == 1
        lines = _profile_lines(caplog)
        assert len(lines) == 1 and str(status) in lines[0]
        wait_until(lambda: rt.tracker(user_id="u1").profile.traits() is not None, "the back-off's end", 5)
    finally:
        rt.delivery.shutdown(2)


def test_a_refused_token_is_named_but_never_printed(
    store_path: str, api: ProfileReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    rt = _runtime(store_path, api, profiles_token="wrong-token-abcdef")
    try:
        assert rt.tracker(user_id="u1").profile.traits() is None
        assert rt.tracker(user_id="u1").profile.audiences() is None  # no back-off for a 401, no new line
        assert len(api.requests()) == 2
        (line,) = _profile_lines(caplog)
        assert "401" in line and "PROFILES_TOKEN" in line and "authentication_error" in line
        assert "wrong-token-abcdef" not in caplog.text
        assert "u1" not in line  # the visitor's id is personal data: our lines never name it
    finally:
        rt.delivery.shutdown(2)


def test_an_unreachable_api_gives_none_at_once(store_path: str, caplog: pytest.LogCaptureFixture) -> None:
    rt = _runtime(store_path, None)  # port 9: nothing listens
    try:
        started = time.monotonic()
        assert rt.tracker(user_id="u1").profile.traits() is None
        assert time.monotonic() - started < 0.5 + 0.25
        assert "could not be reached" in caplog.text and TOKEN not in caplog.text
    finally:
        rt.delivery.shutdown(2)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"traits": 3}', b"{" + b" " * 2_000_000 + b"}"])
def test_an_answer_not_as_documented_gives_none(
    runtime: Runtime, api: ProfileReceiver, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    api.body = body
    assert runtime.tracker(user_id="u1").profile.traits() is None
    assert "no traits object" in caplog.text or "over 1 MB" in caplog.text


def test_not_configured_gives_none_and_says_so_once(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    rt = Runtime(Settings.from_sources({"local_store": store_path}, environ={}))
    try:
        assert rt.tracker(user_id="u1").profile.traits() is None
        assert rt.tracker(user_id="u1").profile.audiences() is None
        assert _profile_lines(caplog) == [
            "segment: profile needs SPACE_ID and PROFILES_TOKEN; profile is None"
        ]
    finally:
        rt.delivery.shutdown(2)


def test_the_token_is_in_no_repr_and_no_settings_error(store_path: str, api: ProfileReceiver) -> None:
    rt = _runtime(store_path, api)
    try:
        profile = rt.tracker(user_id="u1").profile
        client = profiles.client_for(rt.settings)
        for text in (repr(rt.settings), repr(profile), repr(client), str(vars(client))):
            assert TOKEN not in text and "u1" not in repr(profile)
    finally:
        rt.delivery.shutdown(2)
    with pytest.raises(SettingsError) as info:
        Settings.from_sources({"profiles_token": TOKEN, "profiles_host": TOKEN}, environ={})  # pasted wrong
    assert TOKEN not in str(info.value) and "<the Profile API token>" in str(info.value)
    with pytest.raises(SettingsError, match=r"^profile_timeout: "):
        Settings(profile_timeout=0)


def _in_child(rt: Runtime, out: Any) -> None:
    out.send(rt.tracker(user_id="u1").profile.audiences())


def test_a_forked_child_makes_its_own_client(runtime: Runtime, api: ProfileReceiver) -> None:
    """gunicorn --preload: the parent's client (its lock, its fetch threads) stays behind."""
    assert runtime.tracker(user_id="u1").profile.traits() is not None
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=_in_child, args=(runtime, child_end))
    child.start()
    assert parent_end.poll(10), "the child gave no answer"
    assert parent_end.recv() == frozenset({"big_spenders"})
    child.join(10)
    assert child.exitcode == 0


# ---------------------------------------------------------------------- async
def test_the_async_twins_answer_and_never_block_the_loop(store_path: str, api: ProfileReceiver) -> None:
    api.delay = 0.3
    rt = _runtime(store_path, api, profile_timeout=0.1)

    async def main() -> tuple[Any, Any, int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        late = await rt.tracker(user_id="u1").profile.atraits()
        elapsed = time.monotonic() - started
        api.delay = 0
        await asyncio.to_thread(wait_until, lambda: len(api.requests()) == 1, "the late answer", 5)
        while (answer := await rt.tracker(user_id="u1").profile.aaudiences()) is None:
            await asyncio.sleep(0.01)
        task.cancel()
        return late, answer, ticks, elapsed

    try:
        late, audiences, ticks, elapsed = asyncio.run(main())
        assert late is None and elapsed < 0.1 + 0.2
        assert audiences == frozenset({"big_spenders"})
        assert ticks >= 5  # the loop ran while the profile was awaited
    finally:
        rt.delivery.shutdown(2)


# ---------------------------------------------------------------------- in real apps
def test_a_flask_view_is_not_slowed_beyond_the_budget(store_path: str, api: ProfileReceiver) -> None:
    flask = pytest.importorskip("flask")
    from segment_middleware.flask import Segment

    app = flask.Flask(__name__)
    app.config.update(
        SEGMENT_LOCAL_STORE=store_path,
        SEGMENT_SPACE_ID=SPACE,
        SEGMENT_PROFILES_TOKEN=TOKEN,
        SEGMENT_PROFILES_HOST=api.url,
        SEGMENT_PROFILE_TIMEOUT=0.15,
        SEGMENT_USER_ID=lambda request: "u1",
    )
    Segment(app)

    @app.get("/")
    def home() -> Any:
        traits = flask.request.segment.profile.traits()  # type: ignore[attr-defined]
        return {"plan": None if traits is None else traits.get("plan")}

    client = app.test_client()
    api.delay = 0.6  # late for the view, in time for the worker (which waits up to 1 s)
    started = time.monotonic()
    assert client.get("/").get_json() == {"plan": None}
    assert time.monotonic() - started < 0.15 + 0.3
    api.delay = 0
    wait_until(lambda: client.get("/").get_json() == {"plan": "pro"}, "the late answer, cached", 5)


def test_a_starlette_view_awaits_the_profile(store_path: str, api: ProfileReceiver) -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from segment_middleware.asgi import SegmentMiddleware

    async def home(request: Request) -> JSONResponse:
        profile = request.state.segment.profile
        return JSONResponse({"audiences": sorted(await profile.aaudiences() or [])})

    app = Starlette(routes=[Route("/", home)])
    app.add_middleware(
        SegmentMiddleware,
        local_store=store_path,
        space_id=SPACE,
        profiles_token=TOKEN,
        profiles_host=api.url,
        profile_timeout=2,
    )
    with TestClient(app) as client:
        client.cookies.set("ajs_anonymous_id", "anon-7")
        response = client.get("/")
        assert response.json() == {"audiences": []}  # anon-7's profile has no audiences
        assert api.requests()[0].path.endswith("/anonymous_id:anon-7/traits")
