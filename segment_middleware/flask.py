"""Flask integration: ``Segment(app)`` or ``segment = Segment(); segment.init_app(app)``.

Settings are the app's ``SEGMENT_*`` config keys (``SEGMENT_WRITE_KEY``,
``SEGMENT_FLUSH_INTERVAL``, ...), then the environment. The tracker is ``request.segment``
and ``g.segment``. The page call is queued when the response starts (the final status,
before a streamed body is sent), or with 500 when the view raised (see ``_AppHooks``).

Flask's ``request`` and ``g`` are reached through their proxies' public
``_get_current_object()``, once per use: any other attribute of a werkzeug proxy goes
through its generic lookup, several times slower.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from flask import Flask, g, got_request_exception, has_request_context, request

from .core import Runtime, served
from .flask_collect import collect_blueprint
from .identity import CookieSpec
from .settings import Settings, SettingsError, unknown_setting
from .snippet import snippet_global
from .tracker import CURRENT, Tracker, untracked
from .userids import flask_user_id
from .wsgi import begin_environ, header_key, page_start_response

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .keywords import SettingsKeywords

__all__ = ["Segment", "SegmentState", "collect_blueprint", "flask_user_id", "tracker"]

_STATE = "segment.flask.tracker"  # in the environ until the page call is queued


class SegmentState:
    """One app's part of the extension, in ``app.extensions["segment"]``: its runtime
    (settings, delivery) and the extension that made it."""

    def __init__(self, extension: Segment, runtime: Runtime) -> None:
        self.extension = extension
        self.runtime = runtime


class Segment:
    """The Flask extension. One ``Segment()`` may serve several apps (``init_app`` each):
    every app gets its own runtime from its own config, in ``app.extensions["segment"]``."""

    def __init__(self, app: Flask | None = None, **settings: Unpack[SettingsKeywords]) -> None:
        self._explicit = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **settings: Unpack[SettingsKeywords]) -> None:
        config: dict[str, Any] = {}
        names = set(Settings.names())
        for key, value in app.config.items():
            if not key.startswith("SEGMENT_"):
                continue
            name = key[len("SEGMENT_") :].lower()
            if name not in names:
                raise SettingsError(unknown_setting(name, "flask"))
            config[name] = value
        settings = {**self._explicit, **settings}
        runtime = served(Runtime(Settings.from_sources(settings, config, style="flask")))
        app.extensions["segment"] = SegmentState(self, runtime)
        hooks = _AppHooks(app, runtime)
        app.before_request(hooks.before)
        app.wsgi_app = _ResponseStart(app.wsgi_app, hooks)  # type: ignore[method-assign]
        got_request_exception.connect(hooks.on_exception, app, weak=False)
        app.jinja_env.globals["segment_snippet"] = snippet_global(lambda: runtime.settings)
        _connect_login_signal(app)


class _AppHooks:
    """What one app's requests run, bound to its runtime.

    One Flask hook, ``before_request``: it starts tracking (reading the environ the app
    sees, after any ``ProxyFix``) and sets ``request.segment``, ``g.segment`` and
    ``current()``. The page call is queued when the response starts (``_ResponseStart``,
    around ``app.wsgi_app``: the status is final, the request context still active, a
    streamed body not yet produced), or from ``got_request_exception`` with 500 when a
    view raised. Why not ``after_request`` and ``teardown_request``: Flask's dispatch of
    each registered hook costs every request more than the work it would do here
    (bench/README.md).
    """

    def __init__(self, app: Flask, runtime: Runtime) -> None:
        self.runtime = runtime
        self.id_key = header_key(runtime.settings.anonymous_id_header)
        self.user_id = runtime.user_lookup(flask_user_id(app))

    def before(self) -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        runtime = self.runtime
        if _static(req.url_rule):
            tracker = untracked()
        else:
            tracker = runtime.start(
                begin_environ, runtime, req.environ, req, self.id_key, functools.partial(self.user_id, req)
            )
        req.segment = tracker
        g._get_current_object().segment = tracker  # type: ignore[attr-defined]
        CURRENT.set(tracker)  # _ResponseStart puts back what was there before the request
        if tracker.enabled:
            req.environ[_STATE] = tracker

    def end(self, environ: dict[str, Any] | None, status: int) -> CookieSpec | None:
        """Queue the page call once; the cookie to set, if any.

        Normally in the request context (Flask starts the response before popping it):
        route and user come from the request. A WSGI middleware between us and Flask that
        starts the response later still gets the page call, found in the environ, with the
        userId identify() set, if any.
        """
        tracker = environ.pop(_STATE, None) if environ is not None else None
        try:
            req = request._get_current_object()  # type: ignore[attr-defined]
        except RuntimeError:  # outside the request context
            req = None
        if tracker is None:
            if req is None:
                return None
            tracker = req.environ.pop(_STATE, None)  # an inner middleware copied the environ
            if tracker is None:
                return None
        if req is None:
            return self.runtime.finish(tracker, status, None, None)
        rule = req.url_rule  # None: the router matched nothing (404, or a slash redirect)
        return self.runtime.finish(tracker, status, req.endpoint, self.user_id(req), rule is not None)

    def on_exception(self, sender: Any, exception: BaseException | None = None, **extra: Any) -> None:
        """A view (or hook) raised: the page call with 500, before Flask re-raises the
        error or turns it into a 500 response (whose start then finds the call made)."""
        self.end(None, 500)


def _static(rule: Any) -> bool:
    """Is this Flask's static file route: the app's ``static`` endpoint (its
    ``static_url_path``) or a blueprint's ``<blueprint>.static``? Files are not pages: not
    tracked, like EXCLUDE_PATHS. Flask matches the URL before ``before_request`` runs, so
    the rule is known when tracking starts."""
    if rule is None:
        return False
    endpoint = rule.endpoint
    return endpoint == "static" or endpoint.endswith(".static")


class _ResponseStart:
    """``app.wsgi_app`` wrapped: the page call when the response starts; ``current()``
    restored afterwards."""

    def __init__(self, wsgi_app: Any, hooks: _AppHooks) -> None:
        self.wsgi_app = wsgi_app
        self.hooks = hooks

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        previous = CURRENT.get()
        try:
            return self.wsgi_app(environ, page_start_response(start_response, self.hooks.end, environ))
        finally:
            CURRENT.set(previous)


def _connect_login_signal(app: Flask) -> None:
    """Flask-Login's ``user_logged_in`` (identify, linking the anonymousId to the user) and
    ``user_logged_out`` (Signed Out, and the new anonymousId of RESET_ON_LOGOUT)."""
    try:
        from flask_login import user_logged_in, user_logged_out
    except ImportError:
        return

    def on_login(sender: Any, user: Any, **kwargs: Any) -> None:
        state = app.extensions.get("segment")
        if state is not None:
            state.runtime.identify_on_login(g.get("segment"), user.get_id(), user)

    def on_logout(sender: Any, user: Any, **kwargs: Any) -> None:
        state = app.extensions.get("segment")
        if state is not None:
            user_id = user.get_id() if user is not None and getattr(user, "is_authenticated", False) else None
            state.runtime.logout(g.get("segment"), user_id)

    user_logged_in.connect(on_login, app, weak=False)
    user_logged_out.connect(on_logout, app, weak=False)


def tracker() -> Tracker:
    """The current request's tracker, typed: ``segment_middleware.flask.tracker().track(...)``.

    The same object as ``request.segment`` and ``g.segment``, which a type checker cannot
    see (Flask's ``Request`` has no ``segment``; ``g``'s attributes are ``Any``). Raises
    RuntimeError outside a request, or in a request of an app without ``Segment(app)``.
    """
    if not has_request_context():
        raise RuntimeError(
            "segment_middleware.flask.tracker() needs a request: outside one, use "
            "segment_middleware.tracker(user_id=...)"
        )
    found = g.get("segment")
    if not isinstance(found, Tracker):
        raise RuntimeError(
            "no Segment tracker on this request: is the extension installed (Segment(app) or "
            "segment.init_app(app)), and is this code running after its before_request hook?"
        )
    return found
