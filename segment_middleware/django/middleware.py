"""The Django middleware: translate a Django request/response for the core, nothing more.

Sync and async capable: under ASGI it runs natively as a coroutine (no thread hop),
resolving the user with ``await request.auser()``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.functional import SimpleLazyObject, empty

from ..context import RequestFacts
from ..tracker import CURRENT, Tracker, untracked
from .conf import get_runtime

log = logging.getLogger("segment_middleware")


def _user_pk(user: Any) -> Any:
    if user is not None and getattr(user, "is_authenticated", False):
        return user.pk
    return None


def default_user_id(request: Any) -> Any:
    """``request.user.pk`` when authenticated (sync requests)."""
    user = request.__dict__.get("user")
    if user is not None and _anonymous_unloaded(user, request):
        return None
    return _user_pk(getattr(request, "user", None))


def _anonymous_unloaded(user: Any, request: Any) -> bool:
    """Is ``user`` AuthenticationMiddleware's lazy user, not loaded yet, on a request whose
    session has no key? Loading it could then only give AnonymousUser (no session key, no
    user), so it is not loaded: a visitor without a session costs no auth lookup. Any other
    lazy user (an app's own token middleware, say) is loaded as before."""
    if not isinstance(user, SimpleLazyObject):
        return False
    fields = _lazy_fields(user)
    if fields.get("_wrapped") is not empty:
        return False
    setup = fields.get("_setupfunc")
    if getattr(setup, "__module__", None) != "django.contrib.auth.middleware":
        return False
    session = request.__dict__.get("session")
    return session is not None and getattr(session, "session_key", "") is None


def _lazy_fields(user: SimpleLazyObject) -> dict[str, Any]:
    """A lazy user's own attributes (``_wrapped``, ``_setupfunc``) from its instance dict,
    so that ``LazyObject.__getattribute__`` (a Python method on every attribute read since
    Django 5.0) does not run for checks made on every request. The values are the ones the
    attributes give; a missing key reads as ``None``, the class's own ``_wrapped``."""
    fields: dict[str, Any] = object.__getattribute__(user, "__dict__")
    return fields


def _evaluated_user(request: Any) -> tuple[bool, Any]:
    """The user if it is known without a query: set by a view (login/logout), already
    loaded, or anonymous for want of a session key. Async views must not trigger the lazy
    sync lookup."""
    user = request.__dict__.get("user")
    if user is None:
        return ("auser" not in request.__dict__), None
    if isinstance(user, SimpleLazyObject):
        wrapped = _lazy_fields(user).get("_wrapped")
        if wrapped is empty:
            if _anonymous_unloaded(user, request):
                return True, None
            cached = request.__dict__.get("_acached_user")
            return (cached is not None), cached
        return True, wrapped
    return True, user


TOOLBAR_APP = "djdt"  # django-debug-toolbar's URL app_name (debug_toolbar.APP_NAME)
COLLECT_APP = "segment_middleware"  # the collection routes' app_name (django/urls.py)


def toolbar_prefix() -> str | None:
    """django-debug-toolbar's URL prefix (``"/__debug__/"``) when the toolbar is installed
    and the root URLconf includes its URLs under plain ``path()`` segments, as its docs set
    it up; None when it is not installed or the prefix cannot be read (a regex, a path
    converter, ``i18n_patterns``): then its views are known only once resolved, by their
    ``djdt`` namespace (see ``_end``). The toolbar's own requests (panels, history) are
    tooling, not pages."""
    from django.apps import apps

    if not apps.is_installed("debug_toolbar"):
        return None
    from django.urls import URLResolver, get_resolver
    from django.urls.resolvers import RoutePattern

    def find(patterns: Any, prefix: str, depth: int) -> str | None:
        for entry in patterns:
            pattern = getattr(entry, "pattern", None)
            if not isinstance(entry, URLResolver) or not isinstance(pattern, RoutePattern):
                continue
            if pattern.converters:
                continue
            route = prefix + str(pattern)
            if entry.app_name == TOOLBAR_APP:
                return route if route != "/" else None  # at the root: every path would match
            if depth < 3:  # the documented setup is at the top level; includes a few deep
                found = find(entry.url_patterns, route, depth + 1)
                if found is not None:
                    return found
        return None

    try:
        return find(get_resolver().url_patterns, "/", 0)
    except Exception as exc:  # a broken URLconf fails the request itself, not us here
        log.debug("segment: django-debug-toolbar's prefix not read (%s)", type(exc).__name__)
        return None


def _load_user(request: Any) -> Any:
    user = request.user
    _ = user.is_authenticated  # evaluates the lazy object, here on a worker thread
    return user


class SegmentMiddleware:
    """Kept short on purpose: every line below runs on every request. Helper calls are
    inlined where that measurably mattered (bench/README.md)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        from django.apps import apps
        from django.conf import settings as django_settings

        self.get_response = get_response
        self.runtime = get_runtime()
        self._user_id = self.runtime.user_lookup(default_user_id)
        s = self.runtime.settings
        self._id_key = "HTTP_" + s.anonymous_id_header.upper().replace("-", "_")
        # Read once, like the rest of the configuration (see _begin).
        self._proxy_ssl = bool(getattr(django_settings, "SECURE_PROXY_SSL_HEADER", None))
        self._toolbar = toolbar_prefix()  # its URLs are never tracked
        self._toolbar_namespace = self._toolbar is None and apps.is_installed("debug_toolbar")
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    # ------------------------------------------------------------------ sync
    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        tracker = self.runtime.start(self._begin, request, functools.partial(self._user_id, request))
        request.segment = tracker
        token = CURRENT.set(tracker)
        try:
            response = self.get_response(request)
        except BaseException:
            CURRENT.reset(token)
            if tracker.enabled:
                self._end(request, tracker, None, self._user_id(request))
            raise
        CURRENT.reset(token)
        if tracker.enabled:
            self._end(request, tracker, response, self._user_id(request))
        return response

    # ------------------------------------------------------------------ async
    async def __acall__(self, request: Any) -> Any:
        tracker = self.runtime.start(self._begin, request, None)
        if tracker.enabled:
            self.runtime.known_user(tracker, await self._auser_id(request))
        request.segment = tracker
        token = CURRENT.set(tracker)
        try:
            response = await self.get_response(request)
        except BaseException:
            CURRENT.reset(token)
            self._end(request, tracker, None, await self._auser_id(request) if tracker.enabled else None)
            raise
        CURRENT.reset(token)
        self._end(request, tracker, response, await self._auser_id(request) if tracker.enabled else None)
        return response

    # ------------------------------------------------------------------ shared
    def _begin(self, request: Any, resolver: Any) -> Tracker:
        runtime = self.runtime
        path = request.path_info  # the path the app routes
        if not runtime.tracks(path, request.method) or (self._toolbar and path.startswith(self._toolbar)):
            return untracked()
        meta = request.META
        # request.scheme reads settings on every call; without a proxy header it is the
        # WSGI server's url scheme. ASGIRequest has no such key: ask it.
        scheme = None if self._proxy_ssl else meta.get("wsgi.url_scheme")
        facts = RequestFacts(
            request.method,
            scheme or request.scheme,
            meta.get("HTTP_HOST") or meta.get("SERVER_NAME", ""),
            request.path,
            meta.get("QUERY_STRING", ""),
            meta.get("HTTP_REFERER"),
            meta.get("HTTP_USER_AGENT"),
            meta.get("HTTP_ACCEPT_LANGUAGE"),
            meta.get("REMOTE_ADDR"),
            meta.get("HTTP_X_FORWARDED_FOR"),
        )
        return runtime.begin(
            request,
            facts,
            meta.get("HTTP_COOKIE"),
            meta.get(self._id_key),
            meta.get("HTTP_SEC_GPC"),
            meta.get("HTTP_DNT"),
            resolver,
        )

    def _end(self, request: Any, tracker: Tracker, response: Any, user_id: str | None) -> None:
        match = getattr(request, "resolver_match", None)
        if match is not None and self._toolbar_namespace and TOOLBAR_APP in match.app_names:
            self.runtime.skip(tracker)  # the toolbar's view, under a prefix not known before
            return
        if match is not None and COLLECT_APP in match.app_names:
            self.runtime.skip(tracker)  # the collection routes, also when CSRF refused the post
            return
        route = match.view_name if match is not None else None
        cookie = self.runtime.finish(
            tracker, 500 if response is None else response.status_code, route, user_id, match is not None
        )
        if cookie is not None and response is not None and cookie.name not in response.cookies:
            response.set_cookie(
                cookie.name,
                cookie.value,
                max_age=cookie.max_age,
                domain=cookie.domain,
                secure=cookie.secure,
                httponly=False,
                samesite="Lax",
            )

    async def _auser_id(self, request: Any) -> str | None:
        if self.runtime.settings.user_id is not None:
            return self._user_id(request)
        known, user = _evaluated_user(request)
        if not known:
            try:
                auser = getattr(request, "auser", None)
                if auser is not None:
                    user = await auser()
                else:  # Django 4.2: no auser(); one thread hop for the session lookup
                    from asgiref.sync import sync_to_async

                    user = await sync_to_async(_load_user)(request)
            except Exception as exc:
                log.warning("segment: could not load the user (%s)", type(exc).__name__)
                return None
        pk = _user_pk(user)
        return None if pk is None else str(pk)
