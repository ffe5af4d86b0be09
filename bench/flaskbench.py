"""The Flask app ``overhead.py`` part 4 measures: bare / ours / naive, called in process.

The same hello-world view on ``/products/<slug>/``, the same realistic browser request and
the same naive reference as ``djbench`` (which holds the request constants), so that the
Flask figures line up with Django's:

- **bare**: ``Flask(__name__)`` with the one view (and ``/health``), nothing else.
- **ours**: the same app with ``segment_middleware.flask.Segment(app, write_key=...,
  host=<receiver>, local_store=<tmp>)``.
- **naive**: the same app with a ``before_request`` / ``after_request`` pair that does what
  ``djbench.NaiveSegmentMiddleware`` does: read the cookies, the query and the absolute
  URL, build the context (ip, userAgent, locale, page, campaign) and call the official
  SDK's ``Client.page()`` inline.

The WSGI app is called the way a server does (``djbench.make_caller``: fresh environ and
``wsgi.input`` per call, body drained, ``close()`` called).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import djbench

WRITE_KEY = djbench.WRITE_KEY
STACKS = ("bare", "ours", "naive")

_CAMPAIGN = djbench._CAMPAIGN
naive_client = djbench.naive_client
sdk_errors = djbench.sdk_errors


def make_app(
    stack: str, ours_host: str | None = None, store: str | None = None, sdk_host: str | None = None
) -> Any:
    """A fresh Flask app for ``stack`` (``bare`` / ``ours`` / ``naive``)."""
    from flask import Flask

    app = Flask(f"flaskbench_{stack}")

    @app.get("/products/<slug>/")
    def product(slug: str) -> Any:
        return app.response_class(b"hello world", mimetype="text/plain")

    @app.get(djbench.HEALTH_PATH)
    def health() -> Any:
        return app.response_class(b"ok", mimetype="text/plain")

    if stack == "ours":
        from segment_middleware.flask import Segment

        Segment(app, write_key=WRITE_KEY, host=ours_host, local_store=store)
    elif stack == "naive":
        install_naive(app, naive_client(sdk_host))
    elif stack != "bare":
        raise ValueError(f"unknown stack {stack!r}")
    return app


def install_naive(app: Any, client: Any) -> None:
    """The ten-minute SDK integration, as Flask request hooks (same message as djbench's)."""
    from flask import g, request

    @app.before_request
    def segment_before() -> None:
        raw_id = request.cookies.get("ajs_anonymous_id") or ""
        g.segment_anonymous_id = unquote(raw_id).strip('"') or str(uuid.uuid4())

    @app.after_request
    def segment_after(response: Any) -> Any:
        if request.path.startswith(djbench.HEALTH_PATH):  # the same exclusion ours makes
            return response
        anonymous_id = g.get("segment_anonymous_id") or str(uuid.uuid4())
        user = g.get("user")
        user_id = str(user.id) if user is not None else None
        environ = request.environ
        query = request.args
        search = "?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else ""
        page = {
            "path": request.path,
            "url": request.url,
            "referrer": request.headers.get("Referer", ""),
            "search": search,
        }
        context: dict[str, Any] = {
            "ip": request.remote_addr,
            "userAgent": request.headers.get("User-Agent", ""),
            "locale": request.headers.get("Accept-Language", "").split(",")[0].split(";")[0] or None,
            "page": page,
            "campaign": {name: query[key] for key, name in _CAMPAIGN.items() if key in query},
        }
        client.page(
            user_id=user_id,
            anonymous_id=anonymous_id,
            name=request.endpoint or request.path,
            properties={**page, "method": request.method, "status": response.status_code},
            context=context,
        )
        return response


def callers(ours_host: str | None, store: str | None, sdk_host: str | None) -> dict[str, Callable[[], int]]:
    """One request function per stack, each with its own app."""
    env = djbench.environ()
    return {s: djbench.make_caller(make_app(s, ours_host, store, sdk_host), env) for s in STACKS}


def measure(
    cfg: dict[str, Any], ours_host: str, sdk_host: str, store: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """Interleaved, rotated rounds of in-process requests (the Django part's method)."""
    import segment_middleware

    calls = callers(ours_host, store, sdk_host)
    client = naive_client(sdk_host)
    deadline = time.monotonic() + cfg["part_limit_s"] * 0.8

    def settle(stack: str) -> None:
        if stack == "ours" and not segment_middleware.flush(30):
            raise RuntimeError("segment_middleware.flush(30) timed out")
        if stack == "naive" and not djbench.sdk_flush(client, 30):
            raise RuntimeError("SDK flush timed out")

    sent = {"ours": 0, "naive": 0}
    for stack in STACKS:
        djbench.run_requests(calls[stack], cfg["fw_warmup"])
        settle(stack)
        if stack in sent:
            sent[stack] += cfg["fw_warmup"]
    n = cfg["fw_per_round"]
    rounds: dict[str, list[djbench.RoundTime]] = {s: [] for s in STACKS}
    singles: dict[str, list[int]] = {s: [] for s in STACKS}
    for r in range(cfg["fw_rounds"]):
        if time.monotonic() > deadline:
            log(f"  flask: time limit reached after {r} rounds")
            break
        for stack in STACKS[r % 3 :] + STACKS[: r % 3]:
            deliver = functools.partial(settle, stack)
            # delivery of the round's messages included
            rounds[stack].append(
                djbench.timed_round(calls[stack], n, singles[stack], f"flask {stack}", deliver)
            )
            if stack in sent:
                sent[stack] += n
    return part_result("flask", n, rounds, singles, sent)


def part_result(
    framework: str,
    n: int,
    rounds: dict[str, list[djbench.RoundTime]],
    singles: dict[str, list[int]],
    sent: dict[str, int],
) -> dict[str, Any]:
    """One framework's figures, in the shape bench/overhead.py reads."""
    import segment_middleware

    return {
        "framework": framework,
        "rounds": len(rounds["bare"]),
        "per_round": n,
        "stacks": {s: djbench.summarize_stack(rounds[s], singles[s]) for s in STACKS},
        "sent": sent,
        "ours_stats": segment_middleware.stats(),
        "sdk_errors": sdk_errors[0],
    }
