"""Flask integration: ``Segment(app)`` or ``segment = Segment(); segment.init_app(app)``.

Settings are the app's ``SEGMENT_*`` config keys (``SEGMENT_WRITE_KEY``,
``SEGMENT_FLUSH_INTERVAL``, ...), then the environment. The tracker is ``request.segment``
and ``g.segment``. The page call is queued in ``after_request`` (the final status, before a
streamed body is sent), or in ``teardown_request`` with 500 when the view raised.
"""

from __future__ import annotations

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
_G_KEY = "_segment_state"


def flask_user_id(_request: Any) -> Any:
    """Flask-Login's ``current_user.get_id()`` when it is set up, else ``g.user``'s id."""
    try:
        from flask import current_app
        from flask_login import current_user

        if getattr(current_app, "login_manager", None) is not None:
            return current_user.get_id() if current_user.is_authenticated else None
    except ImportError:
        pass
    user = g.get("user")
    if user is None:
        return None
    return user.get("id") if isinstance(user, dict) else getattr(user, "id", None)


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
        state = _AppHooks(runtime)
        app.before_request(state.before)
        app.after_request(state.after)
        app.teardown_request(state.teardown)
        app.jinja_env.globals["segment_snippet"] = snippet_global(lambda: runtime.settings)
        _connect_login_signal(app)


class _AppHooks:
    """The three request hooks, bound to one app's runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.id_key = header_key(runtime.settings.anonymous_id_header)

    def user_id(self) -> str | None:
        return self.runtime.user_id_for(request, flask_user_id)

    def before(self) -> None:
        try:
            tracker = begin_environ(self.runtime, request.environ, request, self.id_key, self.user_id)
        except Exception:  # never break the host app
            log.exception("segment: could not start tracking this request")
            tracker = Tracker(None, enabled=False)
        request.segment = tracker  # type: ignore[attr-defined]
        g.segment = tracker
        setattr(g, _G_KEY, [tracker, _current.set(tracker), False])

    def after(self, response: Any) -> Any:
        state = g.get(_G_KEY)
        if state is not None and not state[2]:
            state[2] = True
            self._end(state[0], response.status_code, response)
        return response

    def teardown(self, exc: BaseException | None) -> None:
        state = g.pop(_G_KEY, None)
        if state is None:
            return
        tracker, token, ended = state
        if not ended:
            self._end(tracker, 500, None)
        try:
            _current.reset(token)
        except ValueError:  # reset from another context (streamed response): just clear it
            _current.set(None)

    def _end(self, tracker: Tracker, status: int, response: Any) -> None:
        if not tracker.enabled:
            return
        try:
            cookie = self.runtime.end(tracker, status, request.endpoint, self.user_id())
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
