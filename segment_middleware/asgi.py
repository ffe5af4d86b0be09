"""Starlette, FastAPI, any ASGI app: ``app.add_middleware(SegmentMiddleware, write_key=...)``.

A pure ASGI middleware (it wraps ``send``, like Starlette's own CORS and GZip middleware,
never ``BaseHTTPMiddleware``): bodies stream through untouched, the page call is queued
when ``http.response.start`` passes with the status. ``http`` scopes only; websocket
passes straight through, lifespan too, except that shutdown first flushes (in a worker
thread, never blocking the event loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from .context import RequestFacts
from .core import Runtime, served
from .identity import CookieSpec, set_cookie_header
from .settings import Settings
from .tracker import CURRENT, Tracker, untracked
from .userids import asgi_user_id

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .asgi_collect import collect_router
    from .keywords import SettingsKeywords

__all__ = ["SegmentMiddleware", "asgi_user_id", "collect_router", "get_tracker"]

log = logging.getLogger("segment_middleware")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


_COOKIE, _ID_HEADER = 0, 6
_HEADER_SLOTS = {
    b"cookie": _COOKIE,
    b"host": 1,
    b"referer": 2,
    b"user-agent": 3,
    b"accept-language": 4,
    b"x-forwarded-for": 5,
    b"sec-gpc": 7,
    b"dnt": 8,
}


def route_name(scope: Scope) -> str | None:
    route = scope.get("route")
    name = getattr(route, "name", None)
    if name:
        return str(name)
    endpoint = scope.get("endpoint")
    return getattr(endpoint, "__name__", None)


def route_matched(scope: Scope) -> bool | None:
    """Did the app's router match a route? Starlette's router (FastAPI's too) marks the
    scope it ran on with ``router`` and, on a match, ``route``/``endpoint``; without
    ``router`` no router ran (a plain ASGI app) and nobody can tell: None."""
    if "router" not in scope:
        return None
    return "route" in scope or "endpoint" in scope


class SegmentMiddleware:
    """Keywords are the lowercase setting names: ``write_key``, ``host``, ``exclude_paths``..."""

    def __init__(self, app: Callable[..., Awaitable[None]], **settings: Unpack[SettingsKeywords]) -> None:
        self.app = app
        self.runtime = _made_before_start(settings) or served(
            Runtime(Settings.from_sources(settings, style="kwarg"))
        )
        self._user_id = self.runtime.user_lookup(asgi_user_id)
        s = self.runtime.settings
        self._cookie_name = s.anonymous_id_cookie
        self._slots = dict(_HEADER_SLOTS)
        self._slots.setdefault(s.anonymous_id_header.lower().encode("latin-1"), _ID_HEADER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    # ------------------------------------------------------------------ http
    def _begin(self, scope: Scope) -> Tracker:
        path, route_path = scope["path"], scope["path"]  # what the browser asked, what the app routes
        root = scope.get("root_path")
        if root:  # servers differ on whether path includes the mount (ASGI 3 says it does)
            mount = root.rstrip("/")
            if path == root or path.startswith(mount + "/"):
                route_path = path[len(mount) :] or "/"
            else:
                path = root + path
        if not self.runtime.tracks(route_path, scope["method"]):
            return untracked()
        # One dict lookup per header instead of a chain of comparisons.
        found: list[str | None] = [None] * 9
        slots = self._slots
        for name, value in scope.get("headers") or ():
            slot = slots.get(name)
            if slot is None:
                continue
            text = value.decode("latin-1")
            if slot == _COOKIE and found[_COOKIE] is not None:  # HTTP/2 may split cookies
                text = f"{found[_COOKIE]}; {text}"
            found[slot] = text
        cookie, host, referrer, agent, language, forwarded, anon, gpc, dnt = found
        client = scope.get("client")
        server = scope.get("server")
        if host is None and server:
            host = f"{server[0]}:{server[1]}" if server[1] not in (80, 443, None) else str(server[0])
        facts = RequestFacts(
            scope["method"],
            scope.get("scheme", "http"),
            host or "",
            path,
            scope.get("query_string", b"").decode("latin-1"),
            referrer,
            agent,
            language,
            client[0] if client else None,
            forwarded,
        )
        return self.runtime.begin(
            scope, facts, cookie, anon, gpc, dnt, user_resolver=lambda: self._user_id(scope)
        )

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        tracker = runtime.start(self._begin, scope)
        scope.setdefault("state", {})["segment"] = tracker

        def end(status: int) -> CookieSpec | None:
            return runtime.finish(
                tracker, status, route_name(scope), self._user_id(scope), route_matched(scope)
            )

        async def page_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = end(message["status"])
                if cookie is not None:
                    set_cookie = (b"set-cookie", set_cookie_header(cookie).encode("latin-1"))
                    message["headers"] = [*message.get("headers", ()), set_cookie]
            await send(message)

        token = CURRENT.set(tracker)
        try:
            await self.app(scope, receive, page_send if tracker.enabled else send)
        except BaseException:
            end(500)
            raise
        finally:
            CURRENT.reset(token)

    # ------------------------------------------------------------------ lifespan
    def _lifespan_send(self, send: Send) -> Send:
        delivery = self.runtime.delivery

        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                loop = asyncio.get_running_loop()
                timeout = self.runtime.settings.shutdown_timeout
                try:
                    await loop.run_in_executor(None, delivery.flush, timeout)
                except Exception:
                    log.exception("segment: flush at lifespan shutdown failed")
            await send(message)

        return lifespan_send


try:  # FastAPI resolves dependencies by annotation, so this needs the real Request class.
    from starlette.requests import HTTPConnection

    def get_tracker(request: HTTPConnection) -> Tracker:
        """FastAPI dependency: ``tracker: Tracker = Depends(get_tracker)``."""
        tracker = getattr(request.state, "segment", None)
        if tracker is None:
            raise RuntimeError("SegmentMiddleware is not installed on this app")
        return tracker  # type: ignore[no-any-return]

except ImportError:  # pragma: no cover - plain ASGI without Starlette

    def get_tracker(request: Any) -> Tracker:  # type: ignore[misc]
        raise RuntimeError("get_tracker needs Starlette (pip install 'segment-middleware[starlette]')")


# ---------------------------------------------------------------------- before the app serves
#: Runtimes made for ``tracker()`` from the keywords of a Starlette app's SegmentMiddleware
#: before the app built its middleware (it does on its first call): the middleware Starlette
#: then builds from the same keywords takes its runtime from here, so the process keeps one
#: pipeline for that app, not two.
_before_start: list[tuple[dict[str, Any], Runtime]] = []
_scanned_modules = -1  # len(sys.modules) at the last look for unstarted apps


def _made_before_start(settings: Mapping[str, Any]) -> Runtime | None:
    for i, (keywords, runtime) in enumerate(_before_start):
        if keywords == settings:
            del _before_start[i]
            return runtime
    return None


def runtime_of_unstarted_app() -> Runtime | None:
    """For code outside a request in a process that imported a Starlette/FastAPI app but
    never served it (a script, a worker): the runtime of its ``add_middleware(SegmentMiddleware,
    ...)`` keywords, found among the imported modules' globals. Looked for again only when
    more modules were imported since the last look; every app found is registered."""
    global _scanned_modules
    import sys

    if len(sys.modules) == _scanned_modules:
        return None
    _scanned_modules = len(sys.modules)
    try:
        from starlette.applications import Starlette
    except ImportError:  # pragma: no cover - starlette is why we were called
        return None
    apps: dict[int, Any] = {}
    for module in list(sys.modules.values()):
        try:
            values = list(vars(module).values())
        except TypeError:
            continue
        for value in values:
            if isinstance(value, Starlette) and getattr(value, "middleware_stack", None) is None:
                apps[id(value)] = value
    first: Runtime | None = None
    for app in apps.values():
        for entry in getattr(app, "user_middleware", ()):
            if getattr(entry, "cls", None) is not SegmentMiddleware:
                continue
            keywords = dict(getattr(entry, "kwargs", None) or getattr(entry, "options", None) or {})
            runtime = served(Runtime(Settings.from_sources(keywords, style="kwarg")))
            _before_start.append((keywords, runtime))
            first = first or runtime
    return first


def __getattr__(name: str) -> Any:
    """``collect_router``, the collection routes (``asgi_collect``), made on first use: it
    needs Starlette, which the middleware itself does not."""
    if name == "collect_router":
        from .asgi_collect import collect_router

        return collect_router
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
