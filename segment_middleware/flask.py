"""Flask integration: ``Segment(app)`` or ``segment = Segment(); segment.init_app(app)``.

Settings are the app's ``SEGMENT_*`` config keys (``SEGMENT_WRITE_KEY``,
``SEGMENT_FLUSH_INTERVAL``, ...), then the environment. The tracker is ``request.segment``
and ``g.segment``. The page call is queued in ``after_request`` (the final status, before a
streamed body is sent), or in ``teardown_request`` with 500 when the view raised.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from flask import Flask, g, request

from .core import Runtime
from .settings import Settings, SettingsError
from .snippet import snippet_global
from .tracker import Tracker, _current
from .wsgi import begin_environ, header_key

__all__ = ["Segment"]

log = logging.getLogger("segment_middleware")

# SEGMENT_* keys that belong to other parts of the package, not to Settings.
_OTHER_KEYS = frozenset(("SEGMENT_PUBLIC_API_TOKEN",))
_STATE = "_segment_state"


try:  # optional: looked up once here, not on every request
    from flask_login import current_user as _login_user
except ImportError:  # pragma: no cover - Flask-Login is not installed
    _login_user = None


def flask_user_id(app: Flask) -> Any:
    """``app``'s userId lookup: Flask-Login's ``current_user.get_id()`` when the app has a
    login manager, else ``g.user``'s id (a dict's ``"id"`` or an object's ``.id``)."""

    def lookup(_request: Any) -> Any:
        if _login_user is not None and getattr(app, "login_manager", None) is not None:
            user = _login_user._get_current_object()  # one proxy hop, not one per attribute
            return user.get_id() if user is not None and user.is_authenticated else None
        user = _g().get("user")
        if user is None:
            return None
        return user.get("id") if isinstance(user, dict) else getattr(user, "id", None)

    return lookup


class Segment:
    """The Flask extension; one Runtime per app, kept in ``app.extensions["segment"]``."""

    def __init__(self, app: Flask | None = None, **settings: Any) -> None:
        self._explicit = settings
        self.runtime: Runtime | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **settings: Any) -> None:
        config: dict[str, Any] = {}
        names = set(Settings.names())
        for key, value in app.config.items():
            if not key.startswith("SEGMENT_") or key in _OTHER_KEYS:
                continue
            name = key[len("SEGMENT_") :].lower()
            if name not in names:
                raise SettingsError(f"{key}: unknown setting")
            config[name] = value
        runtime = Runtime(Settings.from_sources({**self._explicit, **settings}, config, style="flask"))
        self.runtime = runtime
        app.extensions["segment"] = self
        state = _AppHooks(app, runtime)
        app.before_request(state.before)
        app.after_request(state.after)
        app.teardown_request(state.teardown)
        app.jinja_env.globals["segment_snippet"] = snippet_global(lambda: runtime.settings)
        _connect_login_signal(app)


class _AppHooks:
    """The three request hooks, bound to one app's runtime.

    Each hook finds Flask's request and ``g`` through the context variables behind the
    ``request`` and ``g`` proxies, once: every proxy attribute access is several Python
    calls inside werkzeug, and they add up on a hello-world request.
    """

    def __init__(self, app: Flask, runtime: Runtime) -> None:
        self.runtime = runtime
        self.id_key = header_key(runtime.settings.anonymous_id_header)
        self._getter = runtime.settings.user_id or flask_user_id(app)

    def user_id(self, req: Any) -> str | None:
        """USER_ID, else Flask-Login / ``g.user``; never raises."""
        try:
            value = self._getter(req)
        except Exception as exc:
            log.warning("segment: USER_ID raised %s; ignoring it for this request", type(exc).__name__)
            return None
        return None if value is None or value == "" else str(value)

    def before(self) -> None:
        req = _request()
        try:
            tracker = begin_environ(
                self.runtime, req.environ, req, self.id_key, functools.partial(self.user_id, req)
            )
        except Exception:  # never break the host app
            log.exception("segment: could not start tracking this request")
            tracker = Tracker(None, enabled=False)
        req.segment = tracker
        _g().segment = tracker
        # The state rides on the request object: one lookup per hook finds it all.
        req.__dict__[_STATE] = [tracker, _current.set(tracker), False]

    def after(self, response: Any) -> Any:
        req = _request()
        state = req.__dict__.get(_STATE)
        if state is not None and not state[2]:
            state[2] = True
            self._end(req, state[0], response.status_code, response)
        return response

    def teardown(self, exc: BaseException | None) -> None:
        req = _request()
        state = req.__dict__.pop(_STATE, None)
        if state is None:
            return
        tracker, token, ended = state
        if not ended:
            self._end(req, tracker, 500, None)
        try:
            _current.reset(token)
        except ValueError:  # reset from another context (streamed response): just clear it
            _current.set(None)

    def _end(self, req: Any, tracker: Tracker, status: int, response: Any) -> None:
        if not tracker.enabled:
            return
        try:
            cookie = self.runtime.end(tracker, status, req.endpoint, self.user_id(req))
            if cookie is not None and response is not None:
                response.set_cookie(
                    cookie.name,
                    cookie.value,
                    max_age=cookie.max_age,
                    domain=cookie.domain,
                    secure=cookie.secure,
                    httponly=False,
                    samesite="Lax",
                )
        except Exception:
            log.exception("segment: could not finish tracking this request")


try:  # Flask 2.2+: the context variables behind the request and g proxies
    from flask.globals import _cv_app, _cv_request

    def _request() -> Any:
        return _cv_request.get().request

    def _g() -> Any:
        return _cv_app.get().g

except ImportError:  # pragma: no cover - a Flask without them: the proxies

    def _request() -> Any:
        return request._get_current_object()  # type: ignore[attr-defined]

    def _g() -> Any:
        return g._get_current_object()  # type: ignore[attr-defined]


def _connect_login_signal(app: Flask) -> None:
    """Flask-Login's ``user_logged_in``: identify, linking the anonymousId to the user."""
    try:
        from flask_login import user_logged_in
    except ImportError:
        return

    def on_login(sender: Any, user: Any, **kwargs: Any) -> None:
        ext = app.extensions.get("segment")
        if ext is not None and ext.runtime is not None:
            ext.runtime.identify_on_login(g.get("segment"), user.get_id(), user)

    user_logged_in.connect(on_login, app, weak=False)
