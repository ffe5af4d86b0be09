"""Any WSGI app (Bottle, Falcon, Pyramid, ...): ``SegmentWSGIMiddleware(app)``.

Also the environ translation the Flask adapter reuses. The page call is queued when the
app calls ``start_response`` (the status is known then, the body not yet sent), or with
500 if the app raised first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .context import RequestFacts
from .core import Runtime, served
from .identity import CookieSpec, set_cookie_header
from .settings import Settings
from .tracker import CURRENT, Tracker, untracked

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .keywords import SettingsKeywords

__all__ = ["SegmentWSGIMiddleware", "begin_environ", "header_key", "page_start_response"]

ENVIRON_KEY = "segment.tracker"

StartResponse = Callable[..., Any]


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


def header_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def begin_environ(
    runtime: Runtime,
    environ: dict[str, Any],
    request: Any,
    id_key: str,
    user_resolver: Callable[[], str | None] | None,
) -> Tracker:
    """Start tracking a WSGI request; an untracked tracker for excluded ones. The rules see
    PATH_INFO, the path the app routes; the page call gets SCRIPT_NAME + PATH_INFO."""
    if not runtime.tracks(environ.get("PATH_INFO", "") or "/", environ.get("REQUEST_METHOD", "GET")):
        return untracked()
    return runtime.begin(
        request,
        facts_from_environ(environ),
        environ.get("HTTP_COOKIE"),
        environ.get(id_key),
        environ.get("HTTP_SEC_GPC"),
        environ.get("HTTP_DNT"),
        user_resolver=user_resolver,
    )


def page_start_response(
    start_response: StartResponse, end: Callable[[Any, int], CookieSpec | None], key: Any
) -> StartResponse:
    """``start_response`` that first ends tracking with the response's status
    (``end(key, status)`` queues the page call) and adds the cookie ``end`` returns to the
    headers."""

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        code = status[:3]
        cookie = end(key, int(code) if code.isdigit() else 500)
        if cookie is not None:
            headers.append(("Set-Cookie", set_cookie_header(cookie)))
        return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

    return start


class SegmentWSGIMiddleware:
    """Wraps a WSGI app. ``user_id`` (or the ``USER_ID`` setting) gets the environ.

    The tracker is ``environ["segment.tracker"]`` and ``segment_middleware.current()``.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        user_id: Any = None,
        /,
        **settings: Unpack[SettingsKeywords],
    ) -> None:
        self.app = app
        if user_id is not None:
            settings["user_id"] = user_id
        self.runtime = served(Runtime(Settings.from_sources(settings, style="kwarg")))
        self._id_key = header_key(self.runtime.settings.anonymous_id_header)
        self._user_id = self.runtime.user_lookup(lambda _environ: None)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        runtime = self.runtime
        tracker = runtime.start(
            begin_environ, runtime, environ, environ, self._id_key, lambda: self._user_id(environ)
        )
        environ[ENVIRON_KEY] = tracker

        def end(environ: dict[str, Any], status: int) -> CookieSpec | None:
            return runtime.finish(tracker, status, None, self._user_id(environ))

        token = CURRENT.set(tracker)
        try:
            return self.app(
                environ,
                page_start_response(start_response, end, environ) if tracker.enabled else start_response,
            )
        except BaseException:
            end(environ, 500)
            raise
        finally:
            CURRENT.reset(token)
