"""Who is signed in, as each framework says it: the adapters' default userId lookups.

Shared by the middleware of each framework and its collection routes (``flask_collect``,
``asgi_collect``), so both read the same user. Framework imports happen inside, once per
app, so that importing this module needs no framework.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

__all__ = ["asgi_is_staff", "asgi_user_id", "flask_is_staff", "flask_user_id"]


def asgi_user_id(scope: MutableMapping[str, Any]) -> Any:
    """Starlette ``AuthenticationMiddleware``'s user: ``identity``, else ``display_name``."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    try:
        identity = user.identity
    except (AttributeError, NotImplementedError):
        identity = None
    return identity if identity not in (None, "") else getattr(user, "display_name", None)


def asgi_is_staff(scope: MutableMapping[str, Any]) -> bool:
    """A staff user for Starlette: authenticated, and ``is_staff`` or ``is_admin`` on the
    user, or the ``staff`` or ``admin`` scope in ``AuthCredentials``."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if getattr(user, "is_staff", False) or getattr(user, "is_admin", False):
        return True
    scopes = getattr(scope.get("auth"), "scopes", None) or ()
    return "staff" in scopes or "admin" in scopes


def flask_user_id(app: Any) -> Callable[[Any], Any]:
    """``app``'s userId lookup: Flask-Login's ``current_user.get_id()`` when the app has a
    login manager, else ``g.user``'s id (a dict's ``"id"`` or an object's ``.id``)."""
    from flask import g

    try:  # optional: looked up once per app here, not on every request
        from flask_login import current_user as login_user
    except ImportError:  # pragma: no cover - Flask-Login is not installed
        login_user = None

    def lookup(_request: Any) -> Any:
        if login_user is not None and getattr(app, "login_manager", None) is not None:
            user = login_user._get_current_object()  # one proxy hop, not one per attribute
            return user.get_id() if user is not None and user.is_authenticated else None
        # g.get("user") without its Python-level call: g keeps its names in its __dict__
        user = g._get_current_object().__dict__.get("user")
        if user is None:
            return None
        return user.get("id") if isinstance(user, dict) else getattr(user, "id", None)

    return lookup


def flask_is_staff(app: Any) -> Callable[[], bool]:
    """A staff user for Flask: Flask-Login's signed-in ``current_user`` (else ``g.user``)
    with a true ``is_staff`` or ``is_admin`` (an attribute, or a dict key)."""
    from flask import g

    def check() -> bool:
        user: Any = None
        if getattr(app, "login_manager", None) is not None:
            from flask_login import current_user

            user = current_user._get_current_object()
            if user is None or not user.is_authenticated:
                return False
        else:
            user = g._get_current_object().__dict__.get("user")
        if isinstance(user, dict):
            return bool(user.get("is_staff") or user.get("is_admin"))
        return bool(getattr(user, "is_staff", False) or getattr(user, "is_admin", False))

    return check
