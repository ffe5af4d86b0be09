"""``settings.SEGMENT`` read once per process, validated, turned into a Runtime."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.core.signals import setting_changed

from ..core import Runtime
from ..settings import UNKNOWN_ID, Problem, Settings, SettingsError, problems

_runtime: Runtime | None = None
_lock = threading.Lock()


def _framework_values() -> dict[str, Any]:
    """``settings.SEGMENT`` with lowercase keys; SettingsError if it is not a dict of them."""
    from django.conf import settings as django_settings

    raw = getattr(django_settings, "SEGMENT", None) or {}
    if not isinstance(raw, Mapping):
        raise SettingsError(f"SEGMENT: must be a dict, got {type(raw).__name__}")
    framework: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise SettingsError(f"SEGMENT: keys must be strings, got {key!r}")
        framework[key.lower()] = value
    return framework


_loaded: Settings | None = None


def load_settings() -> Settings:
    """``settings.SEGMENT`` validated, once per process (and again after a test's
    ``override_settings(SEGMENT=...)``): the runtime, the deploy check and the CLI share it.
    Raises SettingsError naming the first bad key."""
    global _loaded
    loaded = _loaded
    if loaded is None:
        loaded = _loaded = Settings.from_sources(None, _framework_values(), style="django")
    return loaded


def setting_problems() -> list[Problem]:
    """Every invalid key of ``settings.SEGMENT`` (and the environment), each with its id."""
    try:
        framework = _framework_values()
    except SettingsError as exc:
        return [Problem(UNKNOWN_ID, str(exc))]
    return problems(None, framework, style="django")


def file_url_paths() -> tuple[str, ...]:
    """``STATIC_URL`` and ``MEDIA_URL`` when they are paths on this site: files, not pages,
    so never tracked (added to EXCLUDE_PATHS). Not when they are URLs on another host (a
    CDN: those requests never reach us), nor a bare ``"/"`` (every path). Django puts the
    script prefix in front of a relative value; the exclusions match the path the app
    routes (without it), so it is taken off again."""
    from django.conf import settings as django_settings
    from django.urls import get_script_prefix

    script = get_script_prefix()
    found: list[str] = []
    for name in ("STATIC_URL", "MEDIA_URL"):
        url = getattr(django_settings, name, None)
        if not isinstance(url, str) or not url.startswith("/") or url.startswith("//"):
            continue
        if script != "/" and url.startswith(script):
            url = url[len(script) - 1 :]
        if url != "/" and url not in found:
            found.append(url)
    return tuple(found)


def get_runtime() -> Runtime:
    """The process's runtime for Django, built on first use."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                from django.core.exceptions import ImproperlyConfigured

                try:
                    settings = load_settings()
                except SettingsError as exc:
                    raise ImproperlyConfigured(str(exc)) from None
                _runtime = Runtime(settings.replace(exclude_paths=settings.exclude_paths + file_url_paths()))
    return _runtime


def reset() -> None:
    """Forget the settings and the runtime: the next middleware (or log-in signal) builds
    them anew."""
    global _runtime, _loaded
    with _lock:
        _runtime = None
        _loaded = None


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``override_settings(SEGMENT=...)`` in a user's tests takes effect for the next
    client (Django builds its middleware per test client) and is undone after."""
    if setting == "SEGMENT":
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="segment_middleware.setting_changed")
