"""The pure ASGI middleware in process: scopes, users, errors, streaming, lifespan, flush.

The app is called directly (``await app(scope, receive, send)``) where ordering matters, so
the tests see exactly which ASGI messages passed and when.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
    UnauthenticatedUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

import segment_middleware
from segment_middleware import SettingsError
from segment_middleware.asgi import SegmentMiddleware, asgi_user_id

produced: list[int] = []


async def home(request: Request) -> Response:
    request.state.segment.track("Home Seen")
    return PlainTextResponse("home")


async def boom(request: Request) -> Response:
    raise LookupError("from the view")


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            produced.append(i)
            yield f"chunk {i}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("echo " + await websocket.receive_text())
    await websocket.close()


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        name = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def make_app(receiver: SegmentReceiver, tmp_path: Path, **settings: Any) -> Starlette:
    options = {
        "write_key": WRITE_KEY,
        "host": receiver.url,
        "flush_interval": 60,
        "local_store": str(tmp_path / "store.sqlite3"),
        **settings,
    }
    return Starlette(
        routes=[
            Route("/", home, name="home"),
            Route("/boom", boom, name="boom"),
            Route("/stream", stream, name="stream"),
            Route("/health", home),
            WebSocketRoute("/ws", echo),
        ],
        middleware=[
            Middleware(SegmentMiddleware, **options),
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
        ],
    )


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    deliveries: list[Any] = []
    yield deliveries
    for delivery in deliveries:
        delivery.shutdown(2)


def segment_of(app: Starlette) -> SegmentMiddleware:
    """The SegmentMiddleware instance Starlette built for ``app``."""
    layer: Any = app.middleware_stack
    while not isinstance(layer, SegmentMiddleware):
        layer = layer.app
    return layer


def flushed(app: Starlette, receiver: SegmentReceiver, cleanup: list[Any]) -> list[dict[str, Any]]:
    delivery = segment_of(app).runtime.delivery
    cleanup.append(delivery)
    assert delivery.flush(5)
    return receiver.messages


def pages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "page"]


def http_scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }


async def call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(30)  # the client stays connected; the app cancels this wait
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append({**message, "produced_so_far": list(produced)})

    await app(scope, receive, send)
    return sent


def test_users_route_names_cookie_and_header(
    receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]
) -> None:
    app = make_app(receiver, tmp_path)
    with TestClient(app) as client:
        new = client.get("/?utm_campaign=spring")
        assert new.status_code == 200
        cookie = new.headers["set-cookie"]
        assert (
            cookie.startswith("ajs_anonymous_id=%22")
            and "SameSite=Lax" in cookie
            and "HttpOnly" not in cookie
        )
        anon = cookie.split(";")[0].split("=", 1)[1][3:-3]
        signed = client.get("/", headers={"X-User": "alice"})
        assert "set-cookie" not in signed.headers
        client.cookies.clear()
        header = client.get("/", headers={"X-Anonymous-Id": "device-1"})
        assert "set-cookie" not in header.headers
        assert client.get("/health").status_code == 200
        messages = flushed(app, receiver, cleanup)
    got = [(m["name"], m.get("userId"), m["anonymousId"]) for m in pages(messages)]
    assert got == [("home", None, anon), ("home", "alice", anon), ("home", None, "device-1")]
    assert pages(messages)[0]["context"]["campaign"] == {"name": "spring"}
    tracks = [m for m in messages if m["type"] == "track"]
    assert [(m["event"], m["anonymousId"]) for m in tracks] == [
        ("Home Seen", anon),
        ("Home Seen", anon),
        ("Home Seen", "device-1"),
    ], "the excluded /health view got a tracker whose calls were dropped"


def test_user_identity_then_display_name() -> None:
    class WithIdentity(SimpleUser):
        @property
        def identity(self) -> str:
            return "id-1"

    assert asgi_user_id({"user": WithIdentity("shown")}) == "id-1"
    assert asgi_user_id({"user": SimpleUser("shown")}) == "shown"
    assert asgi_user_id({"user": UnauthenticatedUser()}) is None
    assert asgi_user_id({}) is None

    class NoIdentity(BaseUser):  # BaseUser.identity raises NotImplementedError
        is_authenticated = True
        display_name = "only-a-name"

    assert asgi_user_id({"user": NoIdentity()}) == "only-a-name"


async def _call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """One raw ASGI request; the messages the app sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _scope(headers: list[tuple[bytes, bytes]], **extra: Any) -> dict[str, Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "2",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"n=raw",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("shop.example", 8080),
    }
    scope.update(extra)
    return scope


def test_raw_scopes_split_cookies_server_and_scheme(
    receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]
) -> None:
    """HTTP/2 may send several cookie headers; no Host header means the server's address;
    the scope's scheme makes the url and the cookie's Secure flag."""
    app = make_app(receiver, tmp_path)
    split = [(b"cookie", b"ajs_anonymous_id=%22split-id%22"), (b"cookie", b"other=1")]
    first = asyncio.run(_call(app, _scope(split)))
    assert not [h for h in first[0]["headers"] if h[0] == b"set-cookie"], "the first header's id was read"
    second = asyncio.run(_call(app, _scope([], scheme="https", server=("secure.example", 443))))
    (cookie,) = [v for k, v in second[0]["headers"] if k == b"set-cookie"]
    assert cookie.endswith(b"; Secure")
    messages = flushed(app, receiver, cleanup)
    urls = {p["anonymousId"]: p["properties"]["url"] for p in pages(messages)}
    assert urls["split-id"] == "http://shop.example:8080/?n=raw"
    assert [u for a, u in urls.items() if a != "split-id"] == ["https://secure.example/?n=raw"]


def test_page_name_is_the_route_name(receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]) -> None:
    app = Starlette(
        routes=[Route("/named", home, name="the-route-name")],
        middleware=[
            Middleware(
                SegmentMiddleware, write_key=WRITE_KEY, host=receiver.url, local_store=str(tmp_path / "s.db")
            )
        ],
    )
    with TestClient(app) as client:
        client.get("/named")
    (page,) = pages(flushed(app, receiver, cleanup))
    assert page["name"] == "the-route-name"


def test_view_that_raises_gets_500_page_and_error_propagates(
    receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]
) -> None:
    app = make_app(receiver, tmp_path)
    with TestClient(app) as client:
        with pytest.raises(LookupError, match="from the view"):
            client.get("/boom")
        (page,) = pages(flushed(app, receiver, cleanup))
    assert page["name"] == "boom" and page["properties"]["status"] == 500


def test_streaming_passes_through_unbuffered_and_pages_once(
    receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]
) -> None:
    app = make_app(receiver, tmp_path)
    produced.clear()
    sent = asyncio.run(call(app, http_scope("/stream")))
    kinds = [m["type"] for m in sent]
    assert kinds[0] == "http.response.start"
    assert any(name == b"set-cookie" for name, _ in sent[0]["headers"])
    bodies = [m for m in sent if m["type"] == "http.response.body" and m.get("body")]
    assert bodies[0]["body"] == b"chunk 0\n"
    assert bodies[0]["produced_so_far"] == [0], "chunk 0 was sent before chunk 1 was produced"
    (page,) = pages(flushed(app, receiver, cleanup))
    assert page["properties"]["status"] == 200 and page["name"] == "stream"


def test_websocket_and_unknown_scopes_pass_through(
    receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]
) -> None:
    app = make_app(receiver, tmp_path)
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "echo hi"
    assert flushed(app, receiver, cleanup) == [], "websocket traffic emits nothing"

    seen: list[tuple[Any, Any, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    middleware = SegmentMiddleware(inner, local_store=str(tmp_path / "ws.sqlite3"))
    cleanup.append(middleware.runtime.delivery)
    scope, receive, send = {"type": "websocket", "path": "/ws"}, object(), object()
    asyncio.run(middleware(scope, receive, send))  # type: ignore[arg-type]
    assert seen == [(scope, receive, send)] and scope == {"type": "websocket", "path": "/ws"}


def test_lifespan_shutdown_flushes_before_it_completes(receiver: SegmentReceiver, tmp_path: Path) -> None:
    app = make_app(receiver, tmp_path)
    with TestClient(app) as client:
        for _ in range(5):
            client.get("/")
        assert receiver.messages == [], "a 60 s flush interval: nothing sent yet"
    # Leaving the block ran lifespan.shutdown; its completion waited for the flush.
    assert len(pages(receiver.messages)) == 5
    segment_of(app).runtime.delivery.shutdown(1)


def test_flush_from_async_code_does_not_block_the_loop(
    receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]
) -> None:
    app = make_app(receiver, tmp_path)
    with TestClient(app) as client:
        client.get("/")
        receiver.slow(1.0, times=1)

        async def measure() -> tuple[bool, int, float]:
            ticks = 0
            stop = False

            async def ticker() -> None:
                nonlocal ticks
                while not stop:
                    ticks += 1
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(ticker())
            start = time.monotonic()
            done = await segment_middleware.aflush(5)
            elapsed = time.monotonic() - start
            stop = True
            await task
            return done, ticks, elapsed

        done, ticks, elapsed = asyncio.run(measure())
        cleanup.append(segment_of(app).runtime.delivery)
    assert done is True and elapsed >= 0.9, "the flush waited for the slow endpoint, and finished"
    assert ticks >= 30, f"the event loop kept running during the flush ({ticks} ticks in {elapsed:.2f}s)"
    assert len(pages(receiver.messages)) == 1


def test_lifespan_shutdown_waits_at_most_shutdown_timeout(
    receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]
) -> None:
    """A hanging endpoint does not hold the server's shutdown past SHUTDOWN_TIMEOUT."""
    app = make_app(receiver, tmp_path, shutdown_timeout=1, timeout=30)
    receiver.slow(30)
    with TestClient(app) as client:
        client.get("/")
        cleanup.append(segment_of(app).runtime.delivery)
        started = time.monotonic()
    took = time.monotonic() - started
    assert 0.5 <= took < 4.0, f"lifespan shutdown took {took:.2f}s with SHUTDOWN_TIMEOUT=1"


def test_sync_flush_inside_an_event_loop_returns_a_bool(
    receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]
) -> None:
    """A sync helper called from async code gets flush()'s answer, not a Future it never awaits."""
    app = make_app(receiver, tmp_path)
    with TestClient(app) as client:
        client.get("/")
        cleanup.append(segment_of(app).runtime.delivery)

        async def sync_helper_in_async_code() -> Any:
            return segment_middleware.flush(5)

        assert asyncio.run(sync_helper_in_async_code()) is True
        assert len(pages(receiver.messages)) == 1


def test_root_path_is_part_of_the_page_path(
    receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]
) -> None:
    app = make_app(receiver, tmp_path)
    scope = {**http_scope("/shop/"), "root_path": "/shop"}
    sent = asyncio.run(call(app, scope))
    assert sent[0]["status"] in (200, 404)
    (page,) = pages(flushed(app, receiver, cleanup))
    assert page["properties"]["path"] == "/shop/"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"flush_at": 0}, "flush_at"),
        ({"nonsense": 1}, "nonsense"),
        ({"cookie_max_age": "x"}, "cookie_max_age"),
    ],
)
def test_bad_keywords_fail_at_construction(settings: dict[str, Any], named: str) -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not reached")

    with pytest.raises(SettingsError, match=named):
        SegmentMiddleware(inner, write_key=WRITE_KEY, **settings)


def test_fastapi_dependency(receiver: SegmentReceiver, tmp_path: Path, cleanup: list[Any]) -> None:
    fastapi = pytest.importorskip("fastapi")
    from segment_middleware import Tracker
    from segment_middleware.asgi import get_tracker

    api = fastapi.FastAPI()

    @api.get("/items/{item_id}")
    async def item(item_id: int, segment: Tracker = fastapi.Depends(get_tracker)) -> dict[str, int]:  # noqa: B008
        segment.track("Item Viewed", {"item_id": item_id})
        return {"item_id": item_id}

    bare = fastapi.FastAPI()
    bare.get("/x")(lambda segment=fastapi.Depends(get_tracker): "unreachable")  # noqa: B008

    api.add_middleware(
        SegmentMiddleware,
        write_key=WRITE_KEY,
        host=receiver.url,
        flush_interval=60,
        local_store=str(tmp_path / "api.sqlite3"),
    )
    with TestClient(api) as client:
        assert client.get("/items/3").json() == {"item_id": 3}
        layer: Any = api.middleware_stack
        while not isinstance(layer, SegmentMiddleware):
            layer = layer.app
        cleanup.append(layer.runtime.delivery)
        assert layer.runtime.delivery.flush(5)
    (track,) = [m for m in receiver.messages if m["type"] == "track"]
    assert track["properties"] == {"item_id": 3}
    (page,) = pages(receiver.messages)
    assert page["name"] == "item" and page["anonymousId"] == track["anonymousId"]
    with TestClient(bare) as client, pytest.raises(RuntimeError, match="SegmentMiddleware is not installed"):
        client.get("/x")
