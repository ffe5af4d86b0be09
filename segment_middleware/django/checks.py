"""System checks: bad settings and a misplaced middleware fail ``manage.py check``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from ..settings import SettingsError
from .conf import load_settings

OURS = "segment_middleware.django.SegmentMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    try:
        load_settings()
    except SettingsError as exc:
        return [Error(str(exc), hint="See the settings table in the README.", id="segment_middleware.E001")]
    return []


@register(Tags.compatibility)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if OURS not in middleware:
        return [
            Warning(
                f"{OURS} is not in MIDDLEWARE, so no page calls are sent.",
                hint=f"Add {OURS!r} to MIDDLEWARE, after {AUTH!r}.",
                id="segment_middleware.W001",
            )
        ]
    if AUTH in middleware and middleware.index(OURS) < middleware.index(AUTH):
        return [
            Error(
                f"{OURS} comes before {AUTH}, so it cannot see the logged-in user.",
                hint=f"Move {OURS!r} after {AUTH!r} in MIDDLEWARE.",
                id="segment_middleware.E002",
            )
        ]
    return []
