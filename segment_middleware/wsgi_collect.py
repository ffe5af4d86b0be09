"""The collection routes as a plain WSGI app, for frameworks without an adapter of their own
(Bottle, Falcon, Pyramid, ...): mount :class:`CollectApp` under your prefix, inside
``SegmentWSGIMiddleware``::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    app = SegmentWSGIMiddleware(DispatcherMiddleware(site, {"/segment": CollectApp()}))

The route is ``PATH_INFO`` (under the mount's ``SCRIPT_NAME``). The settings are those of
the ``SegmentWSGIMiddleware`` around it; the userId is the USER_ID setting's answer for the
environ, or ``user_id(environ)`` given here; ``is_staff(environ)`` allows ``flush``. Plain
WSGI has no CSRF protection: the origin rules (ALLOWED_ORIGINS) and the JSON routes'
``application/json`` hold cross-site posts off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from .collect import CollectRequest, body_limit, handle
from .core import Runtime, served_runtimes
from .tracker import Tracker

__all__ = ["CollectApp"]

ENVIRON_KEY = "segment.tracker"  # where SegmentWSGIMiddleware leaves the request's tracker
_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


class _Headers(dict[str, str]):
    """The environ's headers by lower-case name."""

    @classmethod
    def of(cls, environ: dict[str, Any]) -> _Headers:
        headers = cls()
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").lower()] = value
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").lower()] = environ[key]
        return headers


class CollectApp:
    """A WSGI app answering the collection routes."""

    def __init__(
        self,
        user_id: Callable[[dict[str, Any]], Any] | None = None,
        is_staff: Callable[[dict[str, Any]], bool] | None = None,
        *,
        runtime: Runtime | None = None,
    ) -> None:
        self._user_id = user_id
        self._is_staff = is_staff
        self._runtime = runtime
        self._lookups: dict[int, tuple[Runtime, Callable[[Any], str | None]]] = {}

    def _runtime_for(self, environ: dict[str, Any]) -> Runtime | None:
        if self._runtime is not None:
            return self._runtime
        tracker = environ.get(ENVIRON_KEY)
        owner = tracker.owner if isinstance(tracker, Tracker) else None
        if isinstance(owner, Runtime):
            return owner
        served = served_runtimes()
        return served[0] if served else None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        runtime = self._runtime_for(environ)
        if runtime is None:
            start_response("500 Internal Server Error", [("Content-Type", "application/json")])
            return [b'{"success":false,"error":"SegmentWSGIMiddleware is not around this app"}']
        route = (environ.get("PATH_INFO") or "/").lstrip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        found = self._lookups.get(id(runtime))
        if found is None or found[0] is not runtime:  # USER_ID, else user_id(environ); made once
            found = self._lookups[id(runtime)] = (runtime, runtime.user_lookup(self._user_id or _nobody))
        lookup = found[1]
        answer = handle(
            runtime,
            CollectRequest(
                method=method,
                route=route,
                headers=_Headers.of(environ),
                body=_read(environ, body_limit(route)) if method == "POST" else b"",
                scheme=environ.get("wsgi.url_scheme", "http"),
                path=environ.get("SCRIPT_NAME", "") + (environ.get("PATH_INFO") or ""),
                query=environ.get("QUERY_STRING", ""),
                remote_addr=environ.get("REMOTE_ADDR"),
                user_id=lambda: lookup(environ),
                is_staff=lambda: bool(self._is_staff and self._is_staff(environ)),
                request=environ,
            ),
        )
        content = answer.content
        headers = [
            ("Content-Type", answer.media_type),
            ("Content-Length", str(len(content))),
            *answer.headers,
        ]
        start_response(f"{answer.status} {_REASONS.get(answer.status, 'Unknown')}", headers)
        return [content]


def _nobody(_environ: dict[str, Any]) -> None:
    return None


def _read(environ: dict[str, Any], limit: int) -> bytes | None:
    """At most ``limit`` bytes of the body; None when it is longer (not read further)."""
    length = -1
    with contextlib.suppress(ValueError):
        length = int(environ.get("CONTENT_LENGTH") or -1)
    if length > limit:
        return None
    stream = environ.get("wsgi.input")
    if stream is None or length == 0:
        return b""
    data = stream.read(limit + 1 if length < 0 else length)
    return None if len(data) > limit else data
