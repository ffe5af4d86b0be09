"""The framework-neutral request cycle every adapter drives.

1. ``tracks(route_path, method)``: EXCLUDE_PATHS and PAGE_METHODS, on the path the app's
   own routes see (without a mount prefix).
2. ``start(begin, ...)``: the adapter's ``begin`` copies raw facts (path, method, the
   Cookie header, a few headers) into :meth:`Runtime.begin`, which makes the tracker.
3. ``finish(tracker, status, route, user_id, matched)``: once the response status is known,
   queue the page call (once; a second call does nothing) and get back the cookie to set.
   A 404 for which the app's router matched no route is not tracked (TRACK_UNMATCHED_ROUTES).

``start`` and ``finish`` are the line between our code and the host app's: whatever
fails inside them is logged and never raised. Nothing here raises on visitor input or
does I/O.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .context import RequestFacts
from .delivery import Delivery
from .identity import CookieSpec, cookie_spec, cookie_value, new_anonymous_id, parse_anonymous_id
from .lifecycle import install_exit_flush
from .logs import announce
from .messages import Queued
from .pipelines import shutdown_all
from .settings import Settings
from .tracker import Tracker, checked_id, untracked

__all__ = ["Runtime", "forget_served", "served", "served_runtimes"]

log = logging.getLogger("segment_middleware")

_CACHED_HEADERS = 2048  # distinct Cookie headers remembered (cleared when full)
_CACHED_HEADER_MAX = 2048  # characters; longer headers are parsed every time
_MISS: Any = object()


class Runtime:
    """Settings plus this process's delivery pipeline; one per configured app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.delivery = Delivery(settings)
        self._exclude = settings.exclude_paths
        self._methods = frozenset(settings.page_methods) if settings.page_methods is not None else None
        self._cookie = settings.anonymous_id_cookie
        self._put = self.delivery.put
        self._sink = self.sink  # one bound method, not one per request
        self._ids: dict[str, str | None] = {}
        self._plan_at_call = settings.plan if settings.plan_violations == "raise" else None
        announce(settings)
        _install_exit_signal()

    # ------------------------------------------------------------------ queueing
    def sink(self, msg: dict[str, Any], facts: RequestFacts | None, ts: float) -> None:
        """A tracker call, queued. With PLAN_VIOLATIONS = "raise" the plan is checked here,
        at the call, so that the view that broke it sees the error."""
        if self._plan_at_call is not None:
            broken = self._plan_at_call.violations(msg)
            if broken:
                name = msg.get("event") or msg.get("type")
                raise ValueError(
                    f"{name!r} breaks the tracking plan {self.settings.tracking_plan}: {'; '.join(broken)}"
                )
        self._put(Queued(msg, ts, facts))

    def tracker(
        self, user_id: Any = None, anonymous_id: str | None = None, facts: RequestFacts | None = None
    ) -> Tracker:
        """A tracker outside any request (tasks, scripts): no request context, or, for a
        background job, the ``facts`` of the request that enqueued it (its calls get that
        request's context; no page call is made for them)."""
        uid = None if user_id is None else checked_id(user_id, "user_id")
        aid = None if anonymous_id is None else checked_id(anonymous_id, "anonymous_id")
        return Tracker(self.sink, user_id=uid, anonymous_id=aid, facts=facts)

    # ------------------------------------------------------------------ request cycle
    def tracks(self, path: str, method: str) -> bool:
        """Cheap first check: excluded path prefixes and PAGE_METHODS."""
        if self._exclude and path.startswith(self._exclude):
            return False
        return self._methods is None or method in self._methods

    def begin(
        self,
        request: Any,
        facts: RequestFacts,
        cookie_header: str | None,
        id_header: str | None,
        gpc: str | None = None,
        dnt: str | None = None,
        user_resolver: Callable[[], str | None] | None = None,
    ) -> Tracker:
        """Decide whether this request is tracked and make its tracker.

        Written flat (no helper call on the usual path but the tracker's own constructor):
        it runs on every request, where each extra Python call is measurable
        (bench/README.md).
        """
        s = self.settings
        if (
            (gpc == "1" and s.honor_gpc)
            or (dnt == "1" and s.honor_dnt)
            or (s.should_track is not None and not self._should_track(request))
        ):
            return untracked()
        anonymous_id = self._ids.get(cookie_header, _MISS) if cookie_header else None  # type: ignore[arg-type]
        if anonymous_id is _MISS:
            anonymous_id = self._cookie_id(cookie_header)  # type: ignore[arg-type]
        is_new = False
        if anonymous_id is None:
            anonymous_id = parse_anonymous_id(id_header)
            if anonymous_id is None:
                anonymous_id, is_new = new_anonymous_id(), True
        if s.consent is not None:
            facts.consent = self._call_quietly(s.consent, request, "CONSENT")
        return Tracker(self._sink, None, anonymous_id, facts, user_resolver, new_visitor=is_new)

    def end(
        self,
        tracker: Tracker,
        status: int | None,
        route: str | None,
        user_id: str | None = None,
        matched: bool | None = None,
    ) -> CookieSpec | None:
        """Queue the request's page call, once (later calls do nothing); returns the cookie
        the response must set.

        ``matched`` is the adapter's report of its router: False when no route matched the
        request, None when the adapter cannot tell (a plain WSGI/ASGI app has no router). A
        404 of no route (a scanner's probe, a stale link) is not a page of the site: unless
        TRACK_UNMATCHED_ROUTES, it sends no page call and sets no cookie. A view's own 404
        (the route matched) is tracked.
        """
        if not tracker.enabled or tracker.ended:
            return None
        if matched is False and status == 404 and not self.settings.track_unmatched_routes:
            tracker.skip_request()
            return None
        facts = tracker.facts
        assert facts is not None
        uid = tracker.end_request(user_id)
        self._put(
            Queued(
                None,  # the automatic page call: built from these
                time.time(),
                facts,
                name=route or facts.path,
                anonymous_id=tracker.anonymous_id,
                user_id=uid,
                status=status,
                title=tracker.title,
            )
        )
        if tracker.new_visitor and self.settings.set_cookie:
            s = self.settings
            return cookie_spec(
                self._cookie,
                tracker.anonymous_id or "",
                s.cookie_max_age,
                s.cookie_domain,
                facts.scheme == "https",
            )
        return None

    def known_user(self, tracker: Tracker, user_id: str | None) -> None:
        """The auth layer's userId, looked up before the view runs (async Django, where it
        cannot be looked up lazily from sync code); identify() may still change it."""
        tracker.known_user(user_id)

    def start(self, begin: Callable[..., Tracker], *args: Any) -> Tracker:
        """``begin(*args)``, the adapter's reading of its request into :meth:`begin`, guarded:
        if it fails, the failure is logged and the request goes on untracked."""
        try:
            return begin(*args)
        except Exception:
            log.exception("segment: could not start tracking this request")
            return untracked()

    def finish(
        self,
        tracker: Tracker,
        status: int | None,
        route: str | None,
        user_id: str | None,
        matched: bool | None = None,
    ) -> CookieSpec | None:
        """:meth:`end`, guarded: if it fails, the failure is logged and the response goes
        out without the page call's cookie."""
        if not tracker.enabled:
            return None
        try:
            return self.end(tracker, status, route, user_id, matched)
        except Exception:
            log.exception("segment: could not finish tracking this request")
            return None

    def skip(self, tracker: Tracker) -> None:
        """End a request without its page call or cookie: what :meth:`end` does for a route
        that matched nothing, and what an adapter does when it learns only after the view
        that the request is one the defaults leave out (django-debug-toolbar's views)."""
        tracker.skip_request()

    def _cookie_id(self, header: str) -> str | None:
        """The anonymousId in a Cookie header not seen yet (``begin`` looks the header up
        in ``_ids`` first: a visitor sends the same header on every request). Remembered,
        bounded; long headers are not kept."""
        ids = self._ids
        found = parse_anonymous_id(cookie_value(header, self._cookie))
        if len(header) <= _CACHED_HEADER_MAX:
            if len(ids) >= _CACHED_HEADERS:
                ids.clear()
            ids[header] = found
        return found

    def user_lookup(self, default: Callable[[Any], Any]) -> Callable[[Any], str | None]:
        """An adapter's userId lookup, made once: USER_ID when configured, else the
        adapter's ``default``; the returned function takes the framework's request and
        never raises."""
        getter = self.settings.user_id or default

        def user_id(request: Any) -> str | None:
            try:
                value = getter(request)
            except Exception as exc:
                log.warning("segment: USER_ID raised %s; ignoring it for this request", type(exc).__name__)
                return None
            return None if value is None or value == "" else str(value)

        return user_id

    def identify_on_login(self, tracker: Tracker | None, user_id: Any, user: Any) -> None:
        """The auth layer's log-in signal: an identify linking the anonymousId to the user."""
        if tracker is None or not tracker.enabled:
            return
        hook = self.settings.identify_traits
        traits = (self._call_quietly(hook, user, "IDENTIFY_TRAITS", {}) or {}) if hook is not None else {}
        try:
            tracker.identify(user_id, traits)
        except (TypeError, ValueError) as exc:
            log.warning("segment: identify on log-in skipped: %s", exc)
            return
        if self.settings.auth_events:
            tracker.b2b.signed_in()

    def signed_up(self, tracker: Tracker | None, user_id: Any) -> None:
        """A visitor created their account during this request: with ALIAS_ON_SIGNUP an
        alias from the anonymousId to the new userId (for destinations that need one), with
        AUTH_EVENTS the B2B ``Signed Up`` as the new user. The request's later calls carry
        the new userId."""
        s = self.settings
        if tracker is None or not tracker.enabled or not (s.alias_on_signup or s.auth_events):
            return
        try:
            if s.alias_on_signup and tracker.anonymous_id is not None:
                tracker.alias(user_id)
            tracker.identify_as(user_id)
            if s.auth_events:
                tracker.b2b.signed_up()
        except (TypeError, ValueError) as exc:
            log.warning("segment: sign-up events skipped: %s", exc)

    def logout(self, tracker: Tracker | None, user_id: Any) -> None:
        """The auth layer's log-out signal: ``Signed Out`` (AUTH_EVENTS) as the user who
        leaves, then, with RESET_ON_LOGOUT, a fresh anonymousId for the rest of the request
        and a cookie with it, as analytics.js ``reset()`` does: the next person on a shared
        device is not stitched to the last one."""
        if tracker is None or not tracker.enabled:
            return
        if self.settings.auth_events and user_id is not None:
            try:
                tracker.identify_as(user_id)
                tracker.b2b.signed_out()
            except (TypeError, ValueError) as exc:
                log.warning("segment: Signed Out skipped: %s", exc)
        if self.settings.reset_on_logout:
            tracker.reset(new_anonymous_id())

    def _should_track(self, request: Any) -> bool:
        hook = self.settings.should_track
        return True if hook is None else bool(self._call_quietly(hook, request, "SHOULD_TRACK", True))

    @staticmethod
    def _call_quietly(hook: Callable[[Any], Any], request: Any, name: str, fallback: Any = None) -> Any:
        try:
            return hook(request)
        except Exception as exc:
            log.warning("segment: %s raised %s; ignoring it for this request", name, type(exc).__name__)
            return fallback


# ---------------------------------------------------------------------- process-wide
_exit_signal_done = False


def _install_exit_signal() -> None:
    """SIGTERM flushes (see lifecycle.install_exit_flush): once per process, by the first
    runtime made on the main thread (signal handlers can only be set there)."""
    global _exit_signal_done
    if not _exit_signal_done:
        _exit_signal_done = install_exit_flush(shutdown_all) != "not main thread"


# ---------------------------------------------------------------------- the apps' runtimes
_served: list[weakref.ref[Runtime]] = []  # runtimes the adapters built for their apps, in order
_served_lock = threading.Lock()


def served(runtime: Runtime) -> Runtime:
    """An adapter built ``runtime`` for its app (Flask ``init_app``, the ASGI and WSGI
    middleware): code outside a request may use it (``ambient``)."""
    with _served_lock:
        _served.append(weakref.ref(runtime))
    return runtime


def served_runtimes() -> list[Runtime]:
    """The apps' runtimes still alive, oldest first."""
    with _served_lock:
        alive = [r for r in (ref() for ref in _served) if r is not None]
        _served[:] = [weakref.ref(r) for r in alive]
    return alive


def forget_served() -> None:
    """Forget every app's runtime (tests)."""
    with _served_lock:
        _served.clear()
