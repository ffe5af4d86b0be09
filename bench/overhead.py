"""In-process cost per framework: bare app, with the package, with the naive middleware.

For Django, Flask and Starlette, each in a fresh child interpreter with two receivers of its
own (one for the package, one for the SDK), three stacks of the same hello-world app get the
same browser request: **bare**, **ours** (the package's middleware) and **naive** (the
official SDK's ``page()`` called inline, see ``common.NaiveSegmentMiddleware``). The app is
called directly (the WSGI callable; for Starlette ``await app(scope, receive, send)`` on one
event loop): no server, no sockets on the request side.

Rounds of ``--per-round`` requests take turns between the stacks, who goes first rotating,
so drift (CPU frequency, the other core's load) hits all alike. Per stack:

- **CPU per request**: process CPU of all threads (``time.process_time``) over the round,
  plus the CPU of the flush that delivers the round's messages, divided by the requests:
  the sender's work is paid by the round that caused it. The median over rounds.
- **p50**: the single-request wall time's median over every timed request.
- **ratio**: (naive - bare) / (ours - bare) of the CPU per request.

Each receiver must hold exactly one page call per request (count, messageIds, path).

Run: ``python bench/overhead.py [--rounds N] [--per-round N] [--frameworks django,flask]
[--json PATH]`` (``./dev bench``). Nothing leaves 127.0.0.1; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common

FRAMEWORKS = ("django", "flask", "starlette")
STACKS = ("bare", "ours", "naive")
#: n requests of one stack, each request's wall time (ns) appended to the list when given.
Batch = Callable[[int, "list[int] | None"], None]


# ---------------------------------------------------------------------- Django
def django_batches(ours_url: str, sdk_url: str, store: str) -> dict[str, Batch]:
    common.configure_django({"WRITE_KEY": common.WRITE_KEY, "HOST": ours_url, "LOCAL_STORE": store}, sdk_url)
    return {s: wsgi_batch(common.wsgi_caller(common.django_handler(common.STACKS[s]))) for s in STACKS}


def wsgi_batch(call: Callable[[], int]) -> Batch:
    def run(n: int, times: list[int] | None) -> None:
        pc = time.perf_counter_ns
        for _ in range(n):
            t0 = pc()
            status = call()
            if times is not None:
                times.append(pc() - t0)
            if status != 200:
                raise RuntimeError(f"status {status}")

    return run


# ---------------------------------------------------------------------- Flask
def flask_app(stack: str, ours_url: str, sdk_url: str, store: str) -> Any:
    from flask import Flask, request

    app = Flask(f"bench_{stack}")

    @app.get("/products/<slug>/")
    def product(slug: str) -> Any:
        return app.response_class(b"hello world", mimetype="text/plain")

    if stack == "ours":
        from segment_middleware.flask import Segment

        Segment(app, write_key=common.WRITE_KEY, host=ours_url, local_store=store)
    elif stack == "naive":
        client = common.naive_client(sdk_url)

        @app.after_request
        def segment_after(response: Any) -> Any:  # the ten-minute integration, as a hook
            env = request.environ
            search = "?" + env["QUERY_STRING"] if env.get("QUERY_STRING") else ""
            page = {
                "path": request.path,
                "url": request.url,
                "referrer": request.headers.get("Referer", ""),
                "search": search,
            }
            client.page(
                user_id=None,
                anonymous_id=common.anonymous_id_of(request.cookies.get("ajs_anonymous_id")),
                name=request.endpoint or request.path,
                properties={**page, "method": request.method, "status": response.status_code},
                context=common.naive_context(page, request.remote_addr, request.headers, request.args),
            )
            return response

    return app


def flask_batches(ours_url: str, sdk_url: str, store: str) -> dict[str, Batch]:
    return {s: wsgi_batch(common.wsgi_caller(flask_app(s, ours_url, sdk_url, store))) for s in STACKS}


# ---------------------------------------------------------------------- Starlette
class NaiveASGIMiddleware:
    """The ten-minute SDK integration for ASGI, done properly (pure ASGI, wraps send)."""

    def __init__(self, app: Any, client: Any) -> None:
        self.app, self.client = app, client

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        async def tracking_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                request = Request(scope)
                qs = scope.get("query_string", b"").decode("latin-1")
                page = {
                    "path": scope["path"],
                    "url": str(request.url),
                    "referrer": request.headers.get("referer", ""),
                    "search": "?" + qs if qs else "",
                }
                route = scope.get("route")
                self.client.page(
                    user_id=None,
                    anonymous_id=common.anonymous_id_of(request.cookies.get("ajs_anonymous_id")),
                    name=getattr(route, "name", None) or scope["path"],
                    properties={**page, "method": scope["method"], "status": message["status"]},
                    context=common.naive_context(
                        page,
                        request.client.host if request.client else None,
                        request.headers,
                        request.query_params,
                    ),
                )
            await send(message)

        await self.app(scope, receive, tracking_send)


def starlette_app(stack: str, ours_url: str, sdk_url: str, store: str) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def product(request: Any) -> Any:
        return PlainTextResponse(b"hello world")

    app = Starlette(routes=[Route("/products/{slug}/", product, name="product")])
    if stack == "ours":
        from segment_middleware.asgi import SegmentMiddleware

        app.add_middleware(SegmentMiddleware, write_key=common.WRITE_KEY, host=ours_url, local_store=store)
    elif stack == "naive":
        app.add_middleware(NaiveASGIMiddleware, client=common.naive_client(sdk_url))
    return app


def asgi_scope() -> dict[str, Any]:
    """The http scope uvicorn builds for the browser GET (one fresh copy per request:
    Starlette writes into it)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("shop.example.com", 443),
        "client": ("203.0.113.7", 51234),
        "scheme": "https",
        "method": "GET",
        "root_path": "",
        "path": common.PAGE_PATH,
        "raw_path": common.PAGE_PATH.encode(),
        "query_string": common.QUERY.encode(),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in common.HEADERS.items()],
        "state": {},
    }


def starlette_batches(ours_url: str, sdk_url: str, store: str) -> dict[str, Batch]:
    loop = asyncio.new_event_loop()
    base = asgi_scope()
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> Any:
        return request

    def batch(app: Any) -> Batch:
        async def run_async(n: int, times: list[int] | None) -> None:
            statuses: list[int] = []

            async def send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            pc = time.perf_counter_ns
            for _ in range(n):
                scope = {**base, "state": {}}
                t0 = pc()
                await app(scope, receive, send)
                if times is not None:
                    times.append(pc() - t0)
            if statuses != [200] * n:
                raise RuntimeError("a request did not answer 200")

        return lambda n, times: loop.run_until_complete(run_async(n, times))

    return {s: batch(starlette_app(s, ours_url, sdk_url, store)) for s in STACKS}


BUILDERS: dict[str, Callable[[str, str, str], dict[str, Batch]]] = {
    "django": django_batches,
    "flask": flask_batches,
    "starlette": starlette_batches,
}


# ---------------------------------------------------------------------- one framework (child)
def child(
    framework: str, ours_url: str, sdk_url: str, rounds: int, per_round: int, warmup: int
) -> dict[str, Any]:
    """Warm-up, then rotated rounds; per stack the rounds' CPU per request and every
    request's wall time."""
    import segment_middleware

    store = os.path.join(tempfile.mkdtemp(prefix="segment-bench-"), "events.sqlite3")
    batches = BUILDERS[framework](ours_url, sdk_url, store)
    client = common.naive_client(sdk_url)

    def settle(stack: str) -> None:
        if stack == "ours" and not segment_middleware.flush(60):
            raise RuntimeError("segment_middleware.flush(60) timed out")
        if stack == "naive" and not common.sdk_flush(client, 60):
            raise RuntimeError("the SDK's flush timed out")

    for stack in STACKS:
        batches[stack](warmup, None)
        settle(stack)
    cpu: dict[str, list[float]] = {s: [] for s in STACKS}
    singles: dict[str, list[int]] = {s: [] for s in STACKS}
    for r in range(rounds):
        for stack in STACKS[r % 3 :] + STACKS[: r % 3]:
            gc.collect()  # the same for every stack; gc stays enabled inside the round
            c0 = time.process_time_ns()
            batches[stack](per_round, singles[stack])
            settle(stack)  # the round pays for delivering what it queued
            cpu[stack].append((time.process_time_ns() - c0) / per_round / 1000)
    sent = warmup + rounds * per_round
    return {
        "stacks": {
            s: {
                "cpu_us": common.median(cpu[s]),
                "round_cpu_us": [round(x, 1) for x in cpu[s]],
                "p50_us": common.pct(singles[s], 50) / 1000,
                "p99_us": common.pct(singles[s], 99) / 1000,
            }
            for s in STACKS
        },
        "sent": {"ours": sent, "naive": sent},
        "ours_stats": segment_middleware.stats(),
        "sdk_errors": common.sdk_errors[0],
    }


def run_framework(framework: str, args: argparse.Namespace) -> dict[str, Any]:
    """One framework in a fresh interpreter with its two receivers; checks what arrived."""
    receivers = {"ours": common.Receiver(), "naive": common.Receiver()}
    try:
        argv = [sys.executable, __file__, "--child", framework, "--ours-url", receivers["ours"].url]
        argv += ["--sdk-url", receivers["naive"].url, "--rounds", str(args.rounds)]
        argv += ["--per-round", str(args.per_round), "--warmup", str(args.warmup)]
        proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=args.limit, cwd=common.HERE)
        if proc.returncode != 0:
            raise RuntimeError(f"{framework}: child exited {proc.returncode}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        result["received"] = {k: rx.summary() for k, rx in receivers.items()}
    finally:
        for rx in receivers.values():
            rx.stop()
    result["delivered_ok"] = {
        k: common.one_page_per_request(result["received"][k], result["sent"][k]) for k in receivers
    }
    s = result["stacks"]
    ours_added = s["ours"]["cpu_us"] - s["bare"]["cpu_us"]
    naive_added = s["naive"]["cpu_us"] - s["bare"]["cpu_us"]
    result["ours_added_us"], result["naive_added_us"] = ours_added, naive_added
    result["ratio"] = common.ratio(naive_added, ours_added)
    return result


def report(results: dict[str, Any]) -> bool:
    ok = True
    print("in-process cost per request (median over rounds; CPU = all threads, delivery included)")
    for fw, r in results["frameworks"].items():
        s = r["stacks"]
        print(f"\n{fw}: {r['rounds']} rounds x {r['per_round']} requests per stack")
        rows = [
            (k, v["cpu_us"], v["p50_us"], v["p99_us"], " ".join(f"{x:.0f}" for x in v["round_cpu_us"]))
            for k, v in s.items()
        ]
        print(common.table(("stack", "cpu µs", "p50 µs", "p99 µs", "cpu per round"), rows))
        p50_ours, p50_naive = (
            s["ours"]["p50_us"] - s["bare"]["p50_us"],
            s["naive"]["p50_us"] - s["bare"]["p50_us"],
        )
        print(
            f"  added CPU: ours {r['ours_added_us']:+.1f} µs, naive {r['naive_added_us']:+.1f} µs, "
            f"ratio naive/ours {r['ratio']:.1f}x   (p50 added: ours {p50_ours:+.1f}, naive {p50_naive:+.1f})"
        )
        rx = r["received"]
        checks = "   ".join(
            f"{k}: {rx[k]['messages']}/{r['sent'][k]} {'ok' if r['delivered_ok'][k] else 'MISMATCH'}"
            for k in rx
        )
        print(f"  delivery: {checks}   SDK errors {r['sdk_errors']}")
        ok = ok and all(r["delivered_ok"].values())
    print("\nsummary: " + "   ".join(f"{fw} {r['ratio']:.1f}x" for fw, r in results["frameworks"].items()))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--per-round", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--limit", type=float, default=600.0, help="seconds a framework may take")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--ours-url", help=argparse.SUPPRESS)
    parser.add_argument("--sdk-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        out = child(args.child, args.ours_url, args.sdk_url, args.rounds, args.per_round, args.warmup)
        print(json.dumps(out), flush=True)
        return 0
    results: dict[str, Any] = {"versions": common.versions(), "frameworks": {}}
    for fw in args.frameworks.split(","):
        common.log(f"overhead: {fw} ...")
        r = run_framework(fw, args)
        results["frameworks"][fw] = {**r, "rounds": args.rounds, "per_round": args.per_round}
    ok = report(results)
    print(f"({results['versions']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
