"""Which runtime serves code that runs outside a request.

``tracker()``, a background job's ``current()`` and the start-up of a shell or worker all
need settings without a request to take them from. They use the framework's own, so a
``manage.py`` command, a Celery worker and the web process send with one configuration
(SPEC section 5), in this order:

1. inside a Flask app context: that app's ``SEGMENT_*`` (its ``Segment`` extension);
2. a process that set Django up: ``settings.SEGMENT`` (the same runtime the middleware uses);
3. the one app the adapters configured in this process (an ASGI or WSGI middleware, a
   Flask app outside its context; a Starlette app that has not started serving yet is
   found among the imported modules and its ``SegmentMiddleware`` keywords used);
4. ``configure(**settings)``;
5. the environment.

Where two of these could both be meant (``configure()`` beside a framework's settings,
several apps in one process), the choice is logged once, never made silently.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any

from .core import Runtime, forget_served, served_runtimes
from .settings import Settings

__all__ = ["configure", "runtime"]

log = logging.getLogger("segment_middleware")

_lock = threading.RLock()
_configured: Runtime | None = None  # configure()'s
_from_env: Runtime | None = None
_said: set[str] = set()  # the ambiguity lines already logged


def configure(settings: Mapping[str, Any]) -> Runtime:
    """``segment_middleware.configure()``: settings for scripts with no framework set up."""
    global _configured
    built = Runtime(Settings.from_sources(settings, style="kwarg"))
    with _lock:
        _configured = built
    return built


def runtime() -> Runtime:
    """The runtime for code outside a request, by the rules in this module's docstring."""
    found = _flask_app() or _django()
    if found is not None:
        if _configured is not None:
            _say("configure", "segment: configure() is ignored here: the framework's settings are used")
        return found
    apps = _served_apps()
    if len(apps) > 1:
        which = "configure()'s" if _configured is not None else "the first app's"
        _say(
            "several",
            "segment: %d apps are configured in this process; outside a request %s settings are used",
            len(apps),
            which,
        )
        return _configured or apps[0]
    if apps:
        if _configured is not None:
            _say("configure", "segment: configure() is ignored here: the app's own settings are used")
        return apps[0]
    if _configured is not None:
        return _configured
    return _environment()


def reset() -> None:
    """Forget every choice (tests)."""
    global _configured, _from_env
    with _lock:
        forget_served()
        _configured = None
        _from_env = None
        _said.clear()


# ---------------------------------------------------------------------- the sources
def _flask_app() -> Runtime | None:
    if sys.modules.get("flask") is None:
        return None
    from flask import current_app, has_app_context

    if not has_app_context():
        return None
    state = current_app.extensions.get("segment")
    return getattr(state, "runtime", None)


def _django() -> Runtime | None:
    """Django's runtime, in a process that configured Django settings naming this package
    (a ``SEGMENT`` setting, the app or the middleware); None otherwise."""
    if sys.modules.get("django.conf") is None:
        return None
    from django.conf import settings

    if not settings.configured:
        return None
    named = "segment_middleware" in " ".join(
        [*getattr(settings, "INSTALLED_APPS", ()), *(getattr(settings, "MIDDLEWARE", None) or ())]
    )
    if not named and getattr(settings, "SEGMENT", None) is None:
        return None
    from .django.conf import get_runtime

    return get_runtime()


def _served_apps() -> list[Runtime]:
    alive = served_runtimes()
    if not alive and sys.modules.get("starlette") is not None:
        from .asgi import runtime_of_unstarted_app

        found = runtime_of_unstarted_app()
        if found is not None:
            alive = [found]
    return alive


def _environment() -> Runtime:
    global _from_env
    with _lock:
        if _from_env is None:
            _from_env = Runtime(Settings.from_sources(style="env"))
        return _from_env


def _say(key: str, message: str, *args: Any) -> None:
    with _lock:
        if key in _said:
            return
        _said.add(key)
    log.warning(message, *args)
