"""The Starlette app ``overhead.py`` part 5 measures: bare / ours / naive, called in process.

- **bare**: ``Starlette(routes=[Route("/products/{slug}/", ...), Route("/health", ...)])``.
- **ours**: the same app + ``app.add_middleware(SegmentMiddleware, write_key=...,
  host=<receiver>, local_store=<tmp>)`` from ``segment_middleware.asgi``.
- **naive**: the same app + ``NaiveASGIMiddleware``, a pure ASGI middleware (it wraps
  ``send``; no ``BaseHTTPMiddleware``) that, when ``http.response.start`` passes, builds the
  same context as ``djbench.NaiveSegmentMiddleware`` (cookies, query, absolute URL, ip,
  userAgent, locale, page, campaign) with Starlette's ``Request`` helpers and calls the
  official SDK's ``Client.page()`` inline.

The app is awaited directly on one event loop: ``await app(scope, receive, send)`` with
scopes built before the timed loop (one fresh dict per request: Starlette writes into the
scope), the same realistic browser headers as ``djbench.HEADERS``, a receive that returns
an empty body and a send that keeps the status.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import djbench
from flaskbench import part_result

WRITE_KEY = djbench.WRITE_KEY
STACKS = ("bare", "ours", "naive")
_CAMPAIGN = djbench._CAMPAIGN

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

naive_client = djbench.naive_client
sdk_errors = djbench.sdk_errors


class NaiveASGIMiddleware:
    """The ten-minute SDK integration for ASGI, done properly (pure ASGI, wraps send)."""

    def __init__(self, app: Callable[..., Awaitable[None]], client: Any) -> None:
        self.app = app
        self.client = client

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(djbench.HEALTH_PATH):
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        client = self.client

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                request = Request(scope)
                raw_id = request.cookies.get("ajs_anonymous_id") or ""
                anonymous_id = unquote(raw_id).strip('"') or str(uuid.uuid4())
                user = scope.get("user")
                is_auth = user is not None and getattr(user, "is_authenticated", False)
                user_id = str(user.identity) if is_auth else None
                headers = request.headers
                query = request.query_params
                qs = scope.get("query_string", b"").decode("latin-1")
                page = {
                    "path": scope["path"],
                    "url": str(request.url),
                    "referrer": headers.get("referer", ""),
                    "search": "?" + qs if qs else "",
                }
                context: dict[str, Any] = {
                    "ip": request.client.host if request.client else None,
                    "userAgent": headers.get("user-agent", ""),
                    "locale": headers.get("accept-language", "").split(",")[0].split(";")[0] or None,
                    "page": page,
                    "campaign": {name: query[key] for key, name in _CAMPAIGN.items() if key in query},
                }
                route = scope.get("route")
                client.page(
                    user_id=user_id,
                    anonymous_id=anonymous_id,
                    name=getattr(route, "name", None) or scope["path"],
                    properties={**page, "method": scope["method"], "status": message["status"]},
                    context=context,
                )
            await send(message)

        await self.app(scope, receive, tracking_send)


def make_app(
    stack: str, ours_host: str | None = None, store: str | None = None, sdk_host: str | None = None
) -> Any:
    """A fresh Starlette app for ``stack`` (``bare`` / ``ours`` / ``naive``)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def product(request: Any) -> Any:
        return PlainTextResponse(b"hello world")

    async def health(request: Any) -> Any:
        return PlainTextResponse(b"ok")

    app = Starlette(
        routes=[Route("/products/{slug}/", product, name="product"), Route(djbench.HEALTH_PATH, health)]
    )
    if stack == "ours":
        from segment_middleware.asgi import SegmentMiddleware

        app.add_middleware(SegmentMiddleware, write_key=WRITE_KEY, host=ours_host, local_store=store)
    elif stack == "naive":
        app.add_middleware(NaiveASGIMiddleware, client=naive_client(sdk_host))
    elif stack != "bare":
        raise ValueError(f"unknown stack {stack!r}")
    return app


def scope(path: str = djbench.PAGE_PATH, query: str = djbench.QUERY) -> dict[str, Any]:
    """The http scope uvicorn would build for the realistic browser GET (copy it per call)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("shop.example.com", 443),
        "client": ("203.0.113.7", 51234),
        "scheme": "https",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": query.encode("ascii"),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in djbench.HEADERS.items()],
        "state": {},
    }


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> Message:
    return _REQUEST


class Sink:
    """The ASGI send: keeps the last status, drops the body."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


async def run_batch(app: Any, scopes: list[dict[str, Any]], times: list[int] | None) -> int:
    """Await ``app`` once per scope; per-request ns into ``times``; returns total ns.

    Each scope is dropped from ``scopes`` as it is used (the list is emptied), as a server
    drops a request's scope: kept, 3,000 scopes and whatever a middleware hung on them
    (ours: the request's tracker in ``scope["state"]``) stayed alive for the whole round,
    for the garbage collector to scan again and again, a cost no server has.
    """
    sink = Sink()
    pc = time.perf_counter_ns
    scopes.reverse()
    pop = scopes.pop
    start = pc()
    while scopes:
        sc = pop()
        t0 = pc()
        sink.status = 0
        await app(sc, receive, sink)
        if times is not None:
            times.append(pc() - t0)
        if sink.status != 200:
            raise RuntimeError(f"status {sink.status}")
    return pc() - start


def measure(
    cfg: dict[str, Any], ours_host: str, sdk_host: str, store: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """Interleaved, rotated rounds (the Django part's method) on one event loop."""
    import segment_middleware

    apps = {s: make_app(s, ours_host, store, sdk_host) for s in STACKS}
    client = naive_client(sdk_host)
    base = scope()
    loop = asyncio.new_event_loop()
    deadline = time.monotonic() + cfg["part_limit_s"] * 0.8

    def settle(stack: str) -> None:  # outside the loop: plain blocking waits
        if stack == "ours" and not segment_middleware.flush(30):
            raise RuntimeError("segment_middleware flush(30) timed out")
        if stack == "naive" and not djbench.sdk_flush(client, 30):
            raise RuntimeError("SDK flush timed out")

    def scopes(n: int) -> list[dict[str, Any]]:
        return [{**base, "state": {}} for _ in range(n)]

    sent = {"ours": 0, "naive": 0}
    n = cfg["fw_per_round"]
    rounds: dict[str, list[djbench.RoundTime]] = {s: [] for s in STACKS}
    singles: dict[str, list[int]] = {s: [] for s in STACKS}
    try:
        for stack in STACKS:
            loop.run_until_complete(run_batch(apps[stack], scopes(cfg["fw_warmup"]), None))
            settle(stack)
            if stack in sent:
                sent[stack] += cfg["fw_warmup"]
        for r in range(cfg["fw_rounds"]):
            if time.monotonic() > deadline:
                log(f"  starlette: time limit reached after {r} rounds")
                break
            for stack in STACKS[r % 3 :] + STACKS[: r % 3]:
                batch = scopes(n)
                gc.collect()  # same for every stack; gc stays enabled inside the loop
                cpu = time.process_time_ns()
                total = loop.run_until_complete(run_batch(apps[stack], batch, singles[stack]))
                cpu = time.process_time_ns() - cpu
                spent = djbench.delivery_cpu_ns(functools.partial(settle, stack))
                rounds[stack].append(djbench.RoundTime((total + spent) / n / 1000, (cpu + spent) / n / 1000))
                if stack in sent:
                    sent[stack] += n
    finally:
        loop.close()
    return part_result("starlette", n, rounds, singles, sent)


__all__ = ["NaiveASGIMiddleware", "make_app", "measure", "scope"]
