"""AppConfig: system checks, and the auth signals: log-in ``identify``, sign-up, log-out
reset, and a deleted user's deletion at Segment (DELETE_ON_USER_DELETE)."""

from __future__ import annotations

import os
from typing import Any

from django.apps import AppConfig


class SegmentConfig(AppConfig):
    name = "segment_middleware.django"
    label = "segment_middleware"
    verbose_name = "Segment"

    def ready(self) -> None:
        from django.conf import settings
        from django.contrib.auth.signals import user_logged_in, user_logged_out
        from django.db.models.signals import post_delete, post_save

        from . import checks  # noqa: F401  (registers the checks)

        user_logged_in.connect(_identify_on_login, dispatch_uid="segment_middleware.identify_on_login")
        user_logged_out.connect(_reset_on_logout, dispatch_uid="segment_middleware.reset_on_logout")
        post_save.connect(
            _signed_up, sender=settings.AUTH_USER_MODEL, dispatch_uid="segment_middleware.signed_up"
        )
        post_delete.connect(
            _user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="segment_middleware.user_deleted"
        )
        _flush_on_reloader_interrupt()


#: Ctrl-C under ``runserver``: the reloader parent SIGKILLs the serving child 0.25 s after
#: the interrupt (``subprocess.run``'s grace period), so the child sends what it can in
#: this much time and spools the rest, instead of waiting for its interpreter's exit.
RELOADER_FLUSH_BUDGET = 0.15


def _flush_on_reloader_interrupt() -> None:
    from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

    if os.environ.get(DJANGO_AUTORELOAD_ENV) != "true":
        return
    from ..lifecycle import install_interrupt_flush
    from ..pipelines import shutdown_all

    install_interrupt_flush(lambda: shutdown_all(RELOADER_FLUSH_BUDGET))


def _identify_on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    from .conf import get_runtime

    get_runtime().identify_on_login(getattr(request, "segment", None), user.pk, user)


def _reset_on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    from .conf import get_runtime

    pk = getattr(user, "pk", None) if user is not None and getattr(user, "is_authenticated", False) else None
    get_runtime().logout(getattr(request, "segment", None), pk)


def _user_deleted(sender: Any, instance: Any, using: str | None = None, **kwargs: Any) -> None:
    """DELETE_ON_USER_DELETE: a deleted user row is deleted at Segment and here too
    (``privacy.file_after``), once its transaction commits; a rollback files nothing (Django
    drops the callbacks of a rolled-back transaction or savepoint). Read at each deletion,
    so ``override_settings`` works."""
    from django.db import transaction

    from .conf import load_settings

    try:
        settings = load_settings()
    except Exception:  # invalid settings: the system check reports them; a deletion goes on
        return
    if not settings.delete_on_user_delete or instance.pk is None:
        return
    from ..privacy import file_after

    user_id = str(instance.pk)
    transaction.on_commit(lambda: file_after(user_id, settings), using=using)


def _signed_up(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    """A user created while an anonymous visitor's request runs is that visitor signing up
    (a user created by a signed-in admin, or outside a request, is not)."""
    if not created or kwargs.get("raw"):
        return
    from ..tracker import current
    from .conf import get_runtime

    tracker = current()
    if tracker is not None and tracker.enabled and tracker.user_id is None:
        get_runtime().signed_up(tracker, instance.pk)
