"""A plain Starlette app for the server tests: token auth, streaming, a failing route, websocket.

``Authorization: Bearer <name>`` signs in a ``SimpleUser`` (userId falls back to its
``display_name``); ``Bearer id:<n>`` a user whose ``identity`` is ``<n>``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from segment_middleware.asgi import SegmentMiddleware


class NumberedUser(SimpleUser):
    def __init__(self, number: str) -> None:
        super().__init__(f"user-{number}")
        self.number = number

    @property
    def identity(self) -> str:
        return self.number


class TokenBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = conn.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not token:
            return None
        user = NumberedUser(token[3:]) if token.startswith("id:") else SimpleUser(token)
        return AuthCredentials(["authenticated"]), user


async def home(request: Request) -> Response:
    return PlainTextResponse("hello")


async def item(request: Request) -> Response:
    request.state.segment.track("Item Viewed", {"n": request.path_params["n"]})
    return PlainTextResponse(f"item {request.path_params['n']}")


async def boom(request: Request) -> Response:
    raise RuntimeError("view failed")


async def stream(request: Request) -> Response:
    delay = min(float(request.query_params.get("delay", "0")), 2.0)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            if i:
                await asyncio.sleep(delay)
            yield f"chunk {i} {time.time():.4f}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield


app = Starlette(
    routes=[
        Route("/", home, name="home"),
        Route("/items/{n}", item, name="item"),
        Route("/boom", boom),
        Route("/stream", stream, name="stream"),
        Route("/health", health),
        WebSocketRoute("/ws", echo),
    ],
    middleware=[
        Middleware(
            SegmentMiddleware,
            flush_interval=float(os.environ.get("TEST_FLUSH_INTERVAL", "60")),
            shutdown_timeout=5,
        ),
        Middleware(AuthenticationMiddleware, backend=TokenBackend()),
    ],
    lifespan=lifespan,
)
