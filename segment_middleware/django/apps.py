"""AppConfig: system checks and the log-in ``identify``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class SegmentConfig(AppConfig):
    name = "segment_middleware.django"
    label = "segment_middleware"
    verbose_name = "Segment"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from . import checks  # noqa: F401  (registers the checks)

        user_logged_in.connect(_identify_on_login, dispatch_uid="segment_middleware.identify_on_login")


def _identify_on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Stitch the visitor's anonymousId to the user who just logged in."""
    tracker = getattr(request, "segment", None) if request is not None else None
    if tracker is None or not tracker.enabled:
        return
    from .conf import get_runtime

    traits: Any = {}
    hook = get_runtime().settings.identify_traits
    if hook is not None:
        traits = get_runtime()._call_quietly(hook, user, "IDENTIFY_TRAITS", {}) or {}
    try:
        tracker.identify(str(user.pk), traits)
    except (TypeError, ValueError) as exc:
        import logging

        logging.getLogger("segment_middleware").warning("segment: identify on log-in skipped: %s", exc)
