"""Where ours' overhead goes, per framework: the request thread against bare, and the sender.

``overhead.py`` gives one figure per stack; this splits ours' into the parts a change can
move, measured in one process (``/proc/self/task/*/schedstat`` for the other threads' CPU,
``time.thread_time`` for the request loop):

- ``request``: the request thread's CPU per request, ours minus bare (our request path,
  plus whatever the sender's bursts cost it: compare with ``--queue off``);
- ``sender``: the other threads' CPU per queued message (building, encoding, posting);
- ``gc``: the cyclic collector's time per request inside the timed loops, ours and bare.

Rounds alternate bare and ours (3,000 requests each, then ``flush()``), so slow drift of
the VM hits both. ``--queue off`` makes ``Delivery.put`` drop every message (no sender
work at all): the request path alone. ``--post off`` keeps building and encoding but
counts batches as delivered without posting them. The receiver is ``rawreceiver.py`` in
its own process, as in ``overhead.py``.

    .venv/bin/python bench/decompose.py django flask starlette     # ~1 min per framework
    .venv/bin/python bench/decompose.py flask --queue off --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PER_ROUND = 3000


def other_threads_ns() -> int:
    """CPU time (ns, schedstat: finer than stat's clock ticks) of every thread of this
    process but the calling one."""
    me = str(threading.get_native_id())
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if tid == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return total


class GCClock:
    """Time the cyclic collector spends while ``on`` (the timed loops only)."""

    def __init__(self) -> None:
        self.on = False
        self.seconds = 0.0
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start


def loops(
    framework: str, receiver_url: str, store: str, gc_clock: GCClock, server_io: bool = False
) -> Callable[[str, int], float]:
    """``run(stack, n)``: n requests through ``stack``'s app; returns the request thread's CPU.

    ``server_io`` (WSGI only): before each request, one byte written to and read back from
    a socket pair, two calls that release the GIL, as a server's read of the request and
    write of the answer do. Without it the loop holds the GIL from one request to the next."""
    import djbench

    if framework == "starlette":
        if server_io:
            raise SystemExit("server_io: WSGI frameworks only")
        import asgibench

        apps = {s: asgibench.make_app(s, receiver_url, store, receiver_url) for s in ("bare", "ours")}
        base = asgibench.scope()
        loop = asyncio.new_event_loop()

        def run_asgi(stack: str, n: int) -> float:
            scopes = [{**base, "state": {}} for _ in range(n)]
            gc.collect()
            gc_clock.on = True
            start = time.thread_time()
            loop.run_until_complete(asgibench.run_batch(apps[stack], scopes, None))
            spent = time.thread_time() - start
            gc_clock.on = False
            return spent

        return run_asgi
    if framework == "django":
        import overhead

        segment = {"WRITE_KEY": djbench.WRITE_KEY, "HOST": receiver_url, "LOCAL_STORE": store}
        djbench.configure(segment, naive_host=receiver_url)
        calls = overhead.callers(["bare", "ours"])
    elif framework == "flask":
        import flaskbench

        calls = flaskbench.callers(receiver_url, store, receiver_url)
    else:
        raise SystemExit(f"unknown framework {framework!r}")

    ends = socket.socketpair() if server_io else None

    def run_wsgi(stack: str, n: int) -> float:
        call = calls[stack]
        gc.collect()
        gc_clock.on = True
        start = time.thread_time()
        if ends is None:
            for _ in range(n):
                call()
        else:
            write, read = ends[0].send, ends[1].recv
            for _ in range(n):
                write(b"r")
                read(1)
                call()
        spent = time.thread_time() - start
        gc_clock.on = False
        return spent

    return run_wsgi


def post_nothing(self: Any, batch: Any) -> None:
    """``Sender.post`` for "posting off": ``Sender.deliver`` then counts the batch as
    delivered, as after an accepted post, and nothing leaves the process."""


def measure(framework: str, rounds: int, per_round: int = PER_ROUND) -> dict[str, float]:
    import overhead

    import segment_middleware

    receiver = overhead.Receiver(600)
    gc_clock = GCClock()
    try:
        run = loops(framework, receiver.url, tempfile.mkdtemp() + "/store.sqlite3", gc_clock)
        for stack in ("bare", "ours"):
            run(stack, 1000)  # warm up
        assert segment_middleware.flush(30)
        request: dict[str, list[float]] = {"bare": [], "ours": []}
        gc_us: dict[str, list[float]] = {"bare": [], "ours": []}
        sender: list[float] = []
        for r in range(rounds):
            for stack in ("bare", "ours") if r % 2 == 0 else ("ours", "bare"):
                gc_clock.seconds = 0.0
                others = other_threads_ns()
                spent = run(stack, per_round)
                if stack == "ours" and not segment_middleware.flush(30):
                    raise RuntimeError("flush(30) timed out")
                request[stack].append(spent * 1e6 / per_round)
                gc_us[stack].append(gc_clock.seconds * 1e6 / per_round)
                if stack == "ours":
                    sender.append((other_threads_ns() - others) / 1000 / per_round)
        stats = segment_middleware.stats()
        if stats["dropped"] or stats["deferred"] or stats["failed"]:
            raise RuntimeError(f"the queue overflowed or failed, figures would mislead: {stats}")
    finally:
        receiver.stop()
    median = statistics.median
    return {
        "bare": median(request["bare"]),
        "ours": median(request["ours"]),
        "request": median(request["ours"]) - median(request["bare"]),
        "sender": median(sender),
        "gc_bare": median(gc_us["bare"]),
        "gc_ours": median(gc_us["ours"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("frameworks", nargs="+", choices=["django", "flask", "starlette"])
    parser.add_argument("--rounds", type=int, default=8, help="rounds per stack (default 8)")
    parser.add_argument("--per-round", type=int, default=PER_ROUND, help=f"requests per round ({PER_ROUND})")
    parser.add_argument("--queue", choices=["on", "off"], default="on", help="off: put() drops every message")
    parser.add_argument("--post", choices=["on", "off"], default="on", help="off: built, never posted")
    args = parser.parse_args(argv)
    if len(args.frameworks) > 1:  # one process per framework: Django's settings are global
        import subprocess

        extra = ["--rounds", str(args.rounds), "--per-round", str(args.per_round)]
        extra += ["--queue", args.queue, "--post", args.post]
        return max(subprocess.call([sys.executable, __file__, fw, *extra]) for fw in args.frameworks)
    from segment_middleware import delivery, sender

    if args.queue == "off":
        delivery.Delivery.put = lambda self, item: None  # type: ignore[method-assign]
    if args.post == "off":
        sender.Sender.post = post_nothing  # type: ignore[method-assign]
    (framework,) = args.frameworks
    f = measure(framework, args.rounds, args.per_round)
    print(
        f"{framework:9} (queue {args.queue}, post {args.post}, {args.rounds} rounds of {args.per_round}): "
        f"request thread bare {f['bare']:.1f} ours {f['ours']:.1f} µs (+{f['request']:.1f}), "
        f"sender {f['sender']:.1f} µs/message, added {f['request'] + f['sender']:.1f} µs/request; "
        f"gc bare {f['gc_bare']:.2f} ours {f['gc_ours']:.2f} µs/request"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
