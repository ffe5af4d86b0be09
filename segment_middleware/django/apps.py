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
    from .conf import get_runtime

    get_runtime().identify_on_login(getattr(request, "segment", None), user.pk, user)
