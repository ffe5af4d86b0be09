"""Setting hooks (USER_ID, SHOULD_TRACK, CONSENT, ...) that work on every adapter's request.

Each adapter hands hooks its own request object: a Django ``HttpRequest``, a Flask
``Request``, an ASGI scope or a WSGI environ. These read a header from any of them, so one
hook serves the whole settings matrix, and also as a dotted path (``matrix_hooks.x``).
"""

from __future__ import annotations

from typing import Any


def header(request: Any, name: str) -> str | None:
    """A request header from whatever the adapter passes to a setting's callable."""
    if isinstance(request, dict):
        if "headers" in request and "type" in request:  # an ASGI scope
            wanted = name.lower().encode("latin-1")
            for key, value in request["headers"]:
                if key == wanted:
                    return str(value.decode("latin-1"))
            return None
        return request.get("HTTP_" + name.upper().replace("-", "_"))  # a WSGI environ
    meta = getattr(request, "META", None)
    if meta is not None:  # Django
        return meta.get("HTTP_" + name.upper().replace("-", "_"))
    return request.headers.get(name)  # type: ignore[no-any-return]  # Flask / werkzeug


def user_from_header(request: Any) -> str | None:
    """USER_ID: the ``X-Test-User`` header, as a trusted auth proxy would set it."""
    return header(request, "X-Test-User")


def track_unless_header(request: Any) -> bool:
    """SHOULD_TRACK: false when the request carries ``X-No-Track``."""
    return header(request, "X-No-Track") is None


def consent_from_header(request: Any) -> dict[str, bool]:
    """CONSENT: ``X-Consent: ads=0,analytics=1`` as category preferences."""
    raw = header(request, "X-Consent") or ""
    prefs: dict[str, bool] = {}
    for part in raw.split(","):
        name, _, value = part.partition("=")
        if name:
            prefs[name.strip()] = value.strip() == "1"
    return prefs


def raising_hook(request: Any) -> Any:
    raise RuntimeError("a hook that fails for a personal reason: jane@example.com")


def traits_of(user: Any) -> dict[str, Any]:
    """IDENTIFY_TRAITS: the user's name and a constant that shows the hook ran."""
    return {"username": getattr(user, "username", None), "from_hook": True}


def enrich(message: dict[str, Any]) -> dict[str, Any]:
    """BEFORE_SEND: tag every message."""
    message.setdefault("properties", {})["enriched"] = True
    return message


def drop_tracks(message: dict[str, Any]) -> dict[str, Any] | None:
    """BEFORE_SEND: drop track calls, keep the rest."""
    return None if message.get("type") == "track" else message


def raise_on_tracks(message: dict[str, Any]) -> dict[str, Any]:
    """BEFORE_SEND: fails on track calls."""
    if message.get("type") == "track":
        raise RuntimeError("before_send broke")
    return message
