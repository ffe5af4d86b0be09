"""Any WSGI app (Bottle, Falcon, Pyramid, ...): ``SegmentWSGIMiddleware(app)``.

Also the environ translation the Flask adapter reuses. The page call is queued when the
app calls ``start_response`` (the status is known then, the body not yet sent), or with
500 if the app raised first.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .context import RequestFacts
from .core import Runtime
from .settings import Settings
from .tracker import Tracker, _current

__all__ = ["SegmentWSGIMiddleware", "begin_environ", "header_key", "status_code"]

ENVIRON_KEY = "segment.tracker"

log = logging.getLogger("segment_middleware")


def _path(environ: dict[str, Any]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if not path.isascii():  # PEP 3333: bytes decoded as latin-1; undo that for UTF-8 paths
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            path = path.encode("latin-1").decode("utf-8")
    return path or "/"


def facts_from_environ(environ: dict[str, Any]) -> RequestFacts:
    return RequestFacts(
        environ.get("REQUEST_METHOD", "GET"),
        environ.get("wsgi.url_scheme", "http"),
        environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""),
        _path(environ),
        environ.get("QUERY_STRING", ""),
        environ.get("HTTP_REFERER"),
        environ.get("HTTP_USER_AGENT"),
        environ.get("HTTP_ACCEPT_LANGUAGE"),
        environ.get("REMOTE_ADDR"),
        environ.get("HTTP_X_FORWARDED_FOR"),
    )


def status_code(status_line: str) -> int:
    """The code of a WSGI status line ("404 Not Found"); 500 for one that is not."""
    return int(status_line[:3]) if status_line[:3].isdigit() else 500


def header_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def begin_environ(
    runtime: Runtime,
    environ: dict[str, Any],
    request: Any,
    id_key: str,
    user_resolver: Callable[[], str | None] | None,
) -> Tracker:
    """Start tracking a WSGI request; a disabled tracker for untracked ones."""
    if not runtime.tracks(environ.get("PATH_INFO", "") or "/", environ.get("REQUEST_METHOD", "GET")):
        return Tracker(None, enabled=False)
    return runtime.begin(
        request,
        facts_from_environ(environ),
        environ.get("HTTP_COOKIE"),
        environ.get(id_key),
        environ.get("HTTP_SEC_GPC"),
        environ.get("HTTP_DNT"),
        user_resolver=user_resolver,
    )


class SegmentWSGIMiddleware:
    """Wraps a WSGI app. ``user_id`` (or the ``USER_ID`` setting) gets the environ.

    The tracker is ``environ["segment.tracker"]`` and ``segment_middleware.current()``.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], user_id: Any = None, **settings: Any) -> None:
        self.app = app
        if user_id is not None:
            settings["user_id"] = user_id
        self.runtime = Runtime(Settings.from_sources(settings, style="kwarg"))
        self._id_key = header_key(self.runtime.settings.anonymous_id_header)

    def _user_id(self, environ: dict[str, Any]) -> str | None:
        return self.runtime.user_id_for(environ, lambda _environ: None)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        runtime = self.runtime
        try:
            tracker = begin_environ(runtime, environ, environ, self._id_key, lambda: self._user_id(environ))
        except Exception:  # never break the host app
            log.exception("segment: could not start tracking this request")
            tracker = Tracker(None, enabled=False)
        environ[ENVIRON_KEY] = tracker
        if not tracker.enabled:  # views still get a tracker (its calls are dropped)
            token = _current.set(tracker)
            try:
                return self.app(environ, start_response)
            finally:
                _current.reset(token)

        def tracking_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            cookie = runtime.finish(tracker, status_code(status), None, self._user_id(environ))
            if cookie is not None:
                headers.append(("Set-Cookie", cookie))
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        token = _current.set(tracker)
        try:
            return self.app(environ, tracking_start_response)
        except BaseException:
            runtime.finish(tracker, 500, None, self._user_id(environ))
            raise
        finally:
            _current.reset(token)
