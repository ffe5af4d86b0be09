"""The collection routes' Django views: a Django request in, :func:`collect.handle`'s answer out.

Mounted with ``path("segment/", include("segment_middleware.django.urls"))``. The analytics.js
routes (``v1/...``) and the webhooks (``sources/...``) are ``csrf_exempt``: the first carry
no authority (the userId is never taken from a body), the second verify their own
signatures. The JSON calls keep Django's CSRF rules (``X-CSRFToken`` with the session).
Sync views: under ASGI Django runs them in its thread pool, where the user is looked up as
for any sync view.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from ..collect import CollectRequest, body_limit, handle
from ..core import Runtime
from .conf import get_runtime
from .middleware import default_user_id

__all__ = ["asset", "browser", "call", "source"]


def _read(request: HttpRequest, limit: int) -> bytes | None:
    """At most ``limit`` bytes of the body; None when it is longer (not read further)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        return None
    data = request.read(limit + 1)
    return None if len(data) > limit else data


def _is_staff(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_staff", False))


_lookups: weakref.WeakKeyDictionary[Runtime, Callable[[Any], str | None]] = weakref.WeakKeyDictionary()


def _answer(request: HttpRequest, route: str) -> HttpResponse:
    runtime = get_runtime()
    user_id = _lookups.get(runtime)
    if user_id is None:  # the middleware's lookup (USER_ID, else request.user.pk), made once
        user_id = _lookups[runtime] = runtime.user_lookup(default_user_id)
    meta = request.META
    answer = handle(
        runtime,
        CollectRequest(
            method=request.method or "GET",
            route=route,
            headers=request.headers,  # case-insensitive: lower-case names work
            body=_read(request, body_limit(route)) if request.method == "POST" else b"",
            scheme=request.scheme or "http",
            path=request.path,
            query=meta.get("QUERY_STRING", ""),
            remote_addr=meta.get("REMOTE_ADDR"),
            user_id=lambda: user_id(request),
            is_staff=lambda: _is_staff(request),
            request=request,
        ),
    )
    response = HttpResponse(answer.content, status=answer.status, content_type=answer.media_type)
    for name, value in answer.headers:
        response[name] = value
    return response


@csrf_exempt
def browser(request: HttpRequest, kind: str) -> HttpResponse:
    """``v1/<kind>``: what analytics-next posts (``t``, ``p``, ``i``, ``g``, ``a``, ``s``, ``b``)."""
    return _answer(request, f"v1/{kind}")


@csrf_exempt
def source(request: HttpRequest, name: str) -> HttpResponse:
    """``sources/<name>``: a webhook, verified by its source function."""
    return _answer(request, f"sources/{name}")


def asset(request: HttpRequest, form: str, **parts: str) -> HttpResponse:
    """SERVE_ANALYTICS_JS's files; ``form`` (from the URL pattern) rebuilds the route."""
    return _answer(request, form.format(**parts))


def call(request: HttpRequest, call: str) -> Any:
    """``identify``, ``track``, ``page``, ``group``, ``alias`` and ``flush``."""
    return _answer(request, call)
