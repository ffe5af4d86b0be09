"""The collection routes for Starlette and FastAPI:
``app.include_router(segment_middleware.asgi.collect_router, prefix="/segment")``.

``collect_router`` is a FastAPI ``APIRouter`` when FastAPI is installed (what
``include_router`` takes), else a Starlette ``Router``, which a Starlette app mounts with
``Mount("/segment", app=collect_router)`` (an ``APIRouter`` mounts the same way). A Starlette
request in, :func:`segment_middleware.collect.handle`'s answer out. The settings are those
of the app's ``SegmentMiddleware``, the user its ``AuthenticationMiddleware``'s (as for the
page call). Starlette has no CSRF protection of its own: the origin rules (ALLOWED_ORIGINS)
and the JSON routes' ``application/json`` hold cross-site posts off.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .assets import asset_route
from .collect import CollectRequest, CollectResponse, body_limit, handle
from .core import Runtime, served_runtimes
from .userids import asgi_is_staff, asgi_user_id

try:  # FastAPI's include_router takes only its own router class
    from fastapi import APIRouter as _Router
except ImportError:  # pragma: no cover - Starlette without FastAPI
    from starlette.routing import Router as _Router  # type: ignore[assignment]

__all__ = ["collect_router"]

_lookups: weakref.WeakKeyDictionary[Runtime, Callable[[Any], str | None]] = weakref.WeakKeyDictionary()


def _runtime(request: Request) -> Runtime | None:
    """The runtime of the app's SegmentMiddleware: its tracker's on this request (None for
    an untracked request), else the app's served runtime."""
    tracker = request.scope.get("state", {}).get("segment")
    owner = getattr(tracker, "owner", None)
    if isinstance(owner, Runtime):
        return owner
    served = served_runtimes()
    return served[0] if served else None


async def _read(request: Request, limit: int) -> bytes | None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _answer(request: Request, route: str) -> Response:
    runtime = _runtime(request)
    if runtime is None:
        return Response(
            b'{"success":false,"error":"SegmentMiddleware is not installed on this app"}',
            500,
            media_type="application/json",
        )
    lookup = _lookups.get(runtime)
    if lookup is None:
        lookup = _lookups[runtime] = runtime.user_lookup(asgi_user_id)
    scope = request.scope
    client = request.client
    req = CollectRequest(
        method=request.method,
        route=route,
        headers=request.headers,  # case-insensitive, names in lower case
        body=await _read(request, body_limit(route)) if request.method == "POST" else b"",
        scheme=request.url.scheme,
        path=request.url.path,
        query=scope.get("query_string", b"").decode("latin-1"),
        remote_addr=client.host if client else None,
        user_id=lambda: lookup(scope),
        is_staff=lambda: asgi_is_staff(scope),
        request=request,
    )
    answer: CollectResponse
    if route == "flush" or route.startswith("sources/") or asset_route(route) is not None:
        # they block: flush, user code, a fetch from the CDN
        answer = await run_in_threadpool(handle, runtime, req)
    else:
        answer = handle(runtime, req)
    return Response(answer.content, answer.status, dict(answer.headers), media_type=answer.media_type)


async def browser(request: Request) -> Response:
    """``v1/<kind>``: what analytics-next posts (``t``, ``p``, ``i``, ``g``, ``a``, ``s``, ``b``)."""
    return await _answer(request, f"v1/{request.path_params['kind']}")


async def source(request: Request) -> Response:
    """``sources/<name>``: a webhook, verified by its source function."""
    return await _answer(request, f"sources/{request.path_params['name']}")


async def call(request: Request) -> Response:
    """``identify``, ``track``, ``page``, ``group``, ``alias`` and ``flush``."""
    return await _answer(request, request.path_params["call"])


def _asset(form: str) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of one of SERVE_ANALYTICS_JS's files: ``form`` filled with the path's
    parameters is its route under the mount (GET; 404 while the setting is off)."""

    async def asset(request: Request) -> Response:
        return await _answer(request, form.format(**request.path_params))

    return asset


collect_router = _Router()
for _rule, _form in (
    ("/analytics.js/v1/{key}/analytics.min.js", "analytics.js/v1/{key}/analytics.min.js"),
    ("/analytics-next/bundles/{name}", "analytics-next/bundles/{name}"),
    ("/v1/projects/{key}/settings", "v1/projects/{key}/settings"),
    ("/next-integrations/{name:path}", "next-integrations/{name}"),
):
    collect_router.add_route(_rule, _asset(_form), methods=["GET", "HEAD"], include_in_schema=False)
collect_router.add_route("/v1/{kind}", browser, methods=["POST", "OPTIONS"], include_in_schema=False)
collect_router.add_route("/sources/{name}", source, methods=["POST"], include_in_schema=False)
collect_router.add_route("/{call}", call, methods=["POST", "OPTIONS"], include_in_schema=False)
