"""System checks: bad settings and a misplaced middleware fail ``manage.py check``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .conf import setting_problems

OURS = "segment_middleware.django.SegmentMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Every invalid setting, each under its own stable id (``segment.E001`` is WRITE_KEY,
    ``segment.E000`` an unknown key; the ids are in ``settings.Settings``)."""
    hint = "See the settings table in the README."
    return [Error(problem.message, hint=hint, id=problem.id) for problem in setting_problems()]


@register(Tags.compatibility)
def check_advice(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Settings each valid but doing nothing together (``settings.advice``)."""
    from ..settings import advice
    from .conf import load_settings

    try:
        loaded = load_settings()
    except Exception:  # an invalid setting: check_settings reports it
        return []
    return [Warning(problem.message, id=problem.id) for problem in advice(loaded)]


@register(Tags.compatibility)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if OURS not in middleware:
        return [
            Warning(
                f"{OURS} is not in MIDDLEWARE, so no page calls are sent.",
                hint=f"Add {OURS!r} to MIDDLEWARE, after {AUTH!r}.",
                id="segment.W100",
            )
        ]
    if AUTH in middleware and middleware.index(OURS) < middleware.index(AUTH):
        return [
            Error(
                f"{OURS} comes before {AUTH}, so it cannot see the logged-in user.",
                hint=f"Move {OURS!r} after {AUTH!r} in MIDDLEWARE.",
                id="segment.E100",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_write_key_in_production(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``check --deploy``: with DEBUG off and no write key, every event of the live site
    would go to a SQLite file on the server instead of Segment, which nobody notices until
    the dashboards stay empty."""
    if settings.DEBUG:
        return []
    from .conf import load_settings

    try:
        if not load_settings().uses_store:
            return []
    except Exception:  # an invalid setting: check_settings reports it
        return []
    return [
        Warning(
            "DEBUG is off and there is no Segment write key, so events go to the local store, "
            "not to Segment.",
            hint="Set SEGMENT['WRITE_KEY'] (or the SEGMENT_WRITE_KEY environment variable).",
            id="segment.W101",
        )
    ]
