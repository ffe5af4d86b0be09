"""The collection routes as a Flask blueprint:
``app.register_blueprint(segment_middleware.flask.collect_blueprint, url_prefix="/segment")``.

A Flask request in, :func:`segment_middleware.collect.handle`'s answer out. The app's
``Segment`` extension gives the settings (else ``configure()``/the environment), its usual
lookup the user (Flask-Login, else ``g.user``). Flask has no CSRF protection of its own;
with Flask-WTF's ``CSRFProtect`` set up before the blueprint is registered, the
analytics.js and webhook routes are exempted from it (they carry no authority), the JSON
calls keep it. Every post is also held to the origin rules (ALLOWED_ORIGINS).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from flask.blueprints import BlueprintSetupState

from .ambient import runtime as ambient_runtime
from .collect import CollectRequest, body_limit, handle
from .core import Runtime
from .userids import flask_is_staff, flask_user_id

__all__ = ["collect_blueprint"]

collect_blueprint = Blueprint("segment_collect", __name__)

_apps: weakref.WeakKeyDictionary[Flask, tuple[Runtime, Callable[[Any], str | None], Callable[[], bool]]] = (
    weakref.WeakKeyDictionary()
)


def _for_app(app: Flask) -> tuple[Runtime, Callable[[Any], str | None], Callable[[], bool]]:
    """The app's runtime and user lookups, made on its first collection request."""
    found = _apps.get(app)
    if found is None:
        state = app.extensions.get("segment")
        runtime = state.runtime if state is not None else ambient_runtime()
        found = _apps[app] = (runtime, runtime.user_lookup(flask_user_id(app)), flask_is_staff(app))
    return found


def _read(limit: int) -> bytes | None:
    length = request.content_length
    if length is not None and length > limit:
        return None
    data = request.stream.read(limit + 1)
    return None if len(data) > limit else data


def _answer(route: str) -> Response:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    runtime, user_id, is_staff = _for_app(app)
    req = request._get_current_object()  # type: ignore[attr-defined]
    answer = handle(
        runtime,
        CollectRequest(
            method=req.method,
            route=route,
            headers=req.headers,  # case-insensitive: lower-case names work
            body=_read(body_limit(route)) if req.method == "POST" else b"",
            scheme=req.scheme,
            path=req.script_root + req.path,
            query=req.environ.get("QUERY_STRING", ""),
            remote_addr=req.remote_addr,
            user_id=lambda: user_id(req),
            is_staff=is_staff,
            request=req,
        ),
    )
    return Response(answer.content, answer.status, answer.headers, content_type=answer.media_type)


_ASSETS = {  # endpoint -> (URL rule, its route under the mount): SERVE_ANALYTICS_JS
    "bundle": ("/analytics.js/v1/<key>/analytics.min.js", "analytics.js/v1/{key}/analytics.min.js"),
    "chunk": ("/analytics-next/bundles/<name>", "analytics-next/bundles/{name}"),
    "settings": ("/v1/projects/<key>/settings", "v1/projects/{key}/settings"),
    "integration": ("/next-integrations/<path:name>", "next-integrations/{name}"),
}


def asset(**parts: str) -> Response:
    """SERVE_ANALYTICS_JS's files (GET; 404 while it is off)."""
    endpoint = (request.endpoint or "").rpartition(".")[2]
    return _answer(_ASSETS[endpoint][1].format(**parts))


for _endpoint, (_rule, _) in _ASSETS.items():
    collect_blueprint.add_url_rule(_rule, _endpoint, asset)


@collect_blueprint.route("/v1/<kind>", methods=["POST", "OPTIONS"])
def browser(kind: str) -> Response:
    """``v1/<kind>``: what analytics-next posts (``t``, ``p``, ``i``, ``g``, ``a``, ``s``, ``b``)."""
    return _answer(f"v1/{kind}")


@collect_blueprint.route("/sources/<name>", methods=["POST"])
def source(name: str) -> Response:
    """``sources/<name>``: a webhook, verified by its source function."""
    return _answer(f"sources/{name}")


@collect_blueprint.route("/<call>", methods=["POST", "OPTIONS"])
def call(call: str) -> Response:
    """``identify``, ``track``, ``page``, ``group``, ``alias`` and ``flush``."""
    return _answer(call)


@collect_blueprint.record_once
def _exempt_from_csrf(state: BlueprintSetupState) -> None:
    """Flask-WTF's CSRFProtect, when the app has it already: the routes that carry no
    authority are exempt (it matches views by ``module.name``)."""
    csrf = state.app.extensions.get("csrf")
    exempt = getattr(csrf, "exempt", None)
    if exempt is not None:
        exempt(f"{__name__}.browser")
        exempt(f"{__name__}.source")
