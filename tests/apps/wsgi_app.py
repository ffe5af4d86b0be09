"""A framework-less WSGI app behind SegmentWSGIMiddleware, for the gunicorn server test.

The userId comes from a ``user_id`` callable on the environ (here a header a trusted
auth proxy would set).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from segment_middleware.wsgi import SegmentWSGIMiddleware


def inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/boom":
        raise RuntimeError("view failed")
    if path == "/stream":

        def chunks() -> Iterator[bytes]:
            for i in range(3):
                if i:
                    time.sleep(0.3)
                yield f"chunk {i} {time.time():.4f}\n".encode()

        start_response("200 OK", [("Content-Type", "text/plain")])
        return chunks()
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not here"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def user_from_proxy(environ: dict[str, Any]) -> str | None:
    return environ.get("HTTP_X_AUTH_USER") or None


app = SegmentWSGIMiddleware(
    inner,
    user_id=user_from_proxy,
    flush_interval=float(os.environ.get("TEST_FLUSH_INTERVAL", "60")),
    shutdown_timeout=5,
)
