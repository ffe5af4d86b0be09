"""A tiny WSGI app for the gunicorn test of source functions (tests/test_sources.py):
``POST /sources/<name>`` straight to ``sources.handle`` (it reads the body and the headers,
names lower-cased, and writes ``handle``'s status and JSON body), and the package's own
collection mount, ``wsgi_collect.CollectApp``, under ``/segment``.

The secrets come from the environment (``SEGMENT_SOURCE_<NAME>_SECRET``), the write key
and host from ``SEGMENT_WRITE_KEY`` / ``SEGMENT_HOST``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

import orjson

from segment_middleware.core import Runtime
from segment_middleware.settings import Settings
from segment_middleware.sources import Webhook, handle, source
from segment_middleware.wsgi_collect import CollectApp

# The package's log lines (refusals, a function's traceback) to the server's output, which
# the test reads: they must say why, and never hold a body or a secret.
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
logging.getLogger("segment_middleware").addHandler(_handler)
logging.getLogger("segment_middleware").setLevel(logging.INFO)

runtime = Runtime(
    Settings.from_sources({"flush_interval": float(os.environ.get("TEST_FLUSH_INTERVAL", "60"))})
)


@source("payments", scheme="stripe")
def payments(payload: Any, webhook: Webhook) -> None:
    """Stripe's ``charge.succeeded`` becomes ``Order Completed`` for the charge's customer."""
    if payload.get("type") != "charge.succeeded":
        return
    charge = payload["data"]["object"]
    webhook.tracker(user_id=charge["metadata"]["user_id"]).ecommerce.order_completed(
        order_id=charge["metadata"]["order_id"], total=charge["amount"] / 100, currency=charge["currency"]
    )


@source("github", scheme="github")
def github(payload: Any, webhook: Webhook) -> None:
    webhook.tracker(user_id=str(payload["sender"]["id"])).track(
        "Repository Starred" if webhook.headers.get("x-github-event") == "star" else "GitHub Event",
        {"repository": payload["repository"]["full_name"]},
    )


@source("broken", timestamp_header="X-Timestamp")
def broken(payload: Any, webhook: Webhook) -> None:
    """Makes a call, then fails: the call must not be sent."""
    webhook.tracker(user_id="u-broken").track("Half Done")
    raise RuntimeError("the source function failed half-way")


collect = CollectApp(runtime=runtime)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path.startswith("/segment/"):
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/segment"
        environ["PATH_INFO"] = path[len("/segment") :]
        return collect(environ, start_response)
    if path == "/health":
        status, body = 200, {"ok": True}
    elif environ["REQUEST_METHOD"] == "POST" and path.startswith("/sources/"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        status, body = handle(runtime, path[len("/sources/") :], raw, headers)
    else:
        status, body = 404, {"success": False, "error": "not found"}
    data = orjson.dumps(body)
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]
