"""One-process A/B of how ours delivers: the package against variants, round by round.

On this VM a stack's cost drifts by +-30 % over minutes, so two runs of a benchmark cannot
tell a few µs apart. Here every variant lives in the same process, and the rounds
alternate (bare, the package, each variant; the order rotated each round), so drift
hits them alike. Each round is ``--per-round`` requests through one stack, then
``flush()``; its figure is the process CPU (all threads) per request, the flush
included, and "added" is that minus the same round's bare. A round must be much longer
than the sender's wake threshold (1,000 messages), or the flush does all the work
undisturbed (bench/README.md). A stack whose queue overflowed (messages dropped or
deferred to disk, so fewer built and posted in its rounds) is flagged, and the run exits 1.

Variants (each a monkeypatch active during its own rounds only; none is in the package):

- ``post-off``: batches are counted as delivered and never posted.
- ``post-busy``: each post replaced by 75 µs of work holding the GIL (a warm post's cost).
- ``no-stale-poll``: no check for a connection the server closed while idle.
- ``post-gil-free``: the request written and its answer read without releasing the GIL
  (``ctypes.PyDLL`` ``send``/``recv`` with ``MSG_DONTWAIT``); the answer is read before the
  next post, when it has arrived by then. Plain HTTP on Linux only: ``ssl`` releases the
  GIL in every read and write, so this is an experiment, not a possible design.
- ``pinned``: the request thread on CPU 0 and the sender on CPU 1 (Linux, 2+ CPUs).
- ``read-later``: ``post-gil-free``'s order with Python's own socket calls (which release
  the GIL): the request sent whole, its answer read before the next post, no stale poll.
  ``read-later-16k``: the same, sent in 16 KB pieces.
- ``chunked-16k``: the package's post, the request sent in 16 KB pieces.
- ``switch-0.5ms``, ``switch-50ms``: ``sys.setswitchinterval`` for the variant's rounds
  (default 5 ms: how long the sender waits before it forces the GIL back).

    .venv/bin/python bench/ab.py flask --variants post-off,post-gil-free --rounds 12   # ~4 min
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import resource
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

BUSY_POST = 75e-6  # seconds: a warm post of a 100-message batch (bench/README.md)
PER_ROUND = 20_000
# Starlette's loop queues faster than a sender in place drains (one batch per switch
# interval), so its rounds stay under MAX_QUEUE_SIZE: past it, messages would overflow.
PER_ROUND_STARLETTE = 6_000


# ---------------------------------------------------------------------- variants
class Variant:
    """A monkeypatch: ``apply()`` before its rounds, ``undo()`` after."""

    def apply(self) -> None:
        pass

    def undo(self) -> None:
        pass


class Patch(Variant):
    """``owner.name`` replaced by ``value`` while active."""

    def __init__(self, owner: Any, name: str, value: Any) -> None:
        self.owner, self.name, self.value = owner, name, value
        self.original = getattr(owner, name)

    def apply(self) -> None:
        setattr(self.owner, self.name, self.value)

    def undo(self) -> None:
        setattr(self.owner, self.name, self.original)


def _post_busy(self: Any, batch: Any) -> None:
    end = time.perf_counter() + BUSY_POST
    while time.perf_counter() < end:
        pass


class GilFreePost(Variant):
    """``_Direct.post`` without a GIL release on the usual path (see the module docstring).
    Answers are read with the next post; ``undo()`` reads the ones still pending, so the
    package's own post finds a clean connection."""

    MSG_DONTWAIT = 0x40  # Linux

    def __init__(self) -> None:
        from segment_middleware import http
        from segment_middleware.http1 import Answer, read_answer, request_head

        self.http, self.read_answer, self.request_head = http, read_answer, request_head
        self.original = http._Direct.post
        self.ok = Answer(200, "OK", [], b"{}", True)
        self.pending: set[Any] = set()
        self.ready = self.waited = 0
        libc = ctypes.PyDLL(None, use_errno=True)
        self.send = libc.send
        self.send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        self.send.restype = ctypes.c_ssize_t
        self.recv = libc.recv
        self.recv.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        self.recv.restype = ctypes.c_ssize_t
        self.buffer = ctypes.create_string_buffer(65_536)

    def apply(self) -> None:
        variant = self

        def post(direct: Any, body: bytes, retry: int, timeout: float) -> Any:
            return variant.post(direct, body, timeout)

        self.http._Direct.post = post

    def undo(self) -> None:
        for direct in list(self.pending):
            self.settle(direct)
        self.http._Direct.post = self.original

    def settle(self, direct: Any) -> None:
        """Read the answer to ``direct``'s last request (the endpoint here always accepts)."""
        self.pending.discard(direct)
        if direct.sock is not None:
            answer = self.receive(direct.sock)
            if not answer.keep_alive:
                direct.close()

    def receive(self, sock: Any) -> Any:
        got = self.recv(sock.fileno(), self.buffer, len(self.buffer), self.MSG_DONTWAIT)
        if got > 0:
            self.ready += 1
            return self.read_answer(_Prefixed(sock, self.buffer.raw[:got]))
        self.waited += 1
        return self.read_answer(sock)

    def post(self, direct: Any, body: bytes, timeout: float) -> Any:
        if direct in self.pending:
            self.settle(direct)
        if direct.sock is None:
            direct.sock = direct._connect(timeout)
        head = self.request_head(direct.target, direct.host, direct.headers, len(body))
        self.write(direct.sock, head + body)
        self.pending.add(direct)
        return self.ok

    def write(self, sock: Any, data: bytes) -> None:
        sent = 0
        while sent < len(data):
            n = self.send(sock.fileno(), data[sent:], len(data) - sent, self.MSG_DONTWAIT)
            if n <= 0:
                break
            sent += n
        if sent < len(data):
            sock.sendall(data[sent:])


class ReadLater(GilFreePost):
    """Like ``post-gil-free``, with Python's own socket calls (which release the GIL):
    the request sent whole or in ``chunk``-byte sends, its answer read before the next
    post. Which of the two hand-offs per post (the long send, the wait for the answer)
    costs the request thread?"""

    def __init__(self, chunk: int | None) -> None:
        super().__init__()
        self.chunk = chunk

    def receive(self, sock: Any) -> Any:
        return self.read_answer(sock)

    def write(self, sock: Any, data: bytes) -> None:
        if self.chunk is None:
            sock.sendall(data)
        else:
            _send_in_pieces(sock, data, self.chunk)


class Chunked(Variant):
    """The package's post with the request written in ``chunk``-byte sends."""

    def __init__(self, chunk: int) -> None:
        from segment_middleware import http

        self.http, self.original, self.chunk = http, http._Direct.post, chunk
        self.wrapped: set[Any] = set()

    def apply(self) -> None:
        wrapped = self.wrapped
        chunk = self.chunk

        class Sock:
            def __init__(self, sock: Any) -> None:
                self.sock = sock

            def sendall(self, data: bytes) -> None:
                _send_in_pieces(self.sock, data, chunk)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.sock, name)

        original = self.original

        def post(direct: Any, body: bytes, retry: int, timeout: float) -> Any:
            if direct.sock is not None and not isinstance(direct.sock, Sock):
                direct.sock = Sock(direct.sock)
                wrapped.add(direct)
            return original(direct, body, retry, timeout)

        self.http._Direct.post = post

    def undo(self) -> None:
        self.http._Direct.post = self.original
        for direct in self.wrapped:
            if direct.sock is not None:
                direct.sock = direct.sock.sock
        self.wrapped.clear()


class SwitchInterval(Variant):
    """``sys.setswitchinterval(seconds)`` for the variant's rounds: how long the sender
    waits before it forces the GIL back (default 5 ms)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.default = seconds, sys.getswitchinterval()

    def apply(self) -> None:
        sys.setswitchinterval(self.seconds)

    def undo(self) -> None:
        sys.setswitchinterval(self.default)


class Pinned(Variant):
    """The request thread on CPU 0, the sender on CPU 1, for the variant's rounds (the
    receiver process is left free): are the hand-offs dear because the threads move?"""

    def __init__(self) -> None:
        self.all = os.sched_getaffinity(0)

    @staticmethod
    def _others() -> list[int]:
        """The process's other threads: the sender is the only busy one during a round."""
        me = threading.get_native_id()
        return [t.native_id for t in threading.enumerate() if t.native_id and t.native_id != me]

    def apply(self) -> None:
        os.sched_setaffinity(0, {0})  # the calling thread only
        for tid in self._others():
            os.sched_setaffinity(tid, {1})

    def undo(self) -> None:
        os.sched_setaffinity(0, self.all)
        for tid in self._others():
            os.sched_setaffinity(tid, self.all)


def _send_in_pieces(sock: Any, data: bytes, size: int) -> None:
    """``data`` in ``size``-byte ``sendall`` calls: one GIL release per piece."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        sock.sendall(view[start : start + size])


class _Prefixed:
    """A socket whose first ``recv`` returns bytes already read."""

    def __init__(self, sock: Any, first: bytes) -> None:
        self.sock, self.first = sock, first

    def recv(self, size: int) -> bytes:
        if self.first:
            data, self.first = self.first, b""
            return data
        return self.sock.recv(size)


def variants(names: list[str]) -> dict[str, Variant]:
    import decompose

    from segment_middleware import http, sender

    made: dict[str, Callable[[], Variant]] = {
        "post-off": lambda: Patch(sender.Sender, "post", decompose.post_nothing),
        "post-busy": lambda: Patch(sender.Sender, "post", _post_busy),
        "no-stale-poll": lambda: Patch(http, "wait_for_read", lambda sock, timeout=None: False),
        "post-gil-free": GilFreePost,
        "pinned": Pinned,
        "read-later": lambda: ReadLater(None),
        "read-later-16k": lambda: ReadLater(16_384),
        "chunked-16k": lambda: Chunked(16_384),
        "switch-0.5ms": lambda: SwitchInterval(0.0005),
        "switch-50ms": lambda: SwitchInterval(0.05),
    }
    unknown = [n for n in names if n not in made]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(made)}")
    return {name: made[name]() for name in names}


# ---------------------------------------------------------------------- rounds
def measure(
    framework: str, names: list[str], rounds: int, per_round: int, server_io: bool = False
) -> dict[str, Any]:
    import decompose
    import overhead

    import segment_middleware

    receiver = overhead.Receiver(3600)
    try:
        store = tempfile.mkdtemp() + "/store.sqlite3"
        run = decompose.loops(framework, receiver.url, store, decompose.GCClock(), server_io)
        chosen = variants(names)
        for stack in ("bare", "ours"):
            run(stack, 1000)  # warm up
        if not segment_middleware.flush(30):
            raise RuntimeError("flush(30) timed out")
        stacks = ["bare", "package", *names]
        cpu: dict[str, list[float]] = {s: [] for s in stacks}
        usage: dict[str, list[tuple[float, float]]] = {s: [] for s in stacks}
        overflowed = dict.fromkeys(stacks, 0)
        for r in range(rounds):
            order = stacks[r % len(stacks) :] + stacks[: r % len(stacks)]
            for stack in order:
                variant = chosen.get(stack)
                if variant is not None:
                    variant.apply()
                try:
                    gc.collect()
                    counted = segment_middleware.stats()
                    before, start = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
                    run("bare" if stack == "bare" else "ours", per_round)
                    if stack != "bare" and not segment_middleware.flush(60):
                        raise RuntimeError("flush(60) timed out")
                    spent, after = time.process_time() - start, resource.getrusage(resource.RUSAGE_SELF)
                finally:
                    if variant is not None:
                        variant.undo()
                overflowed[stack] += _shortfall(counted, segment_middleware.stats())
                cpu[stack].append(spent * 1e6 / per_round)
                switches = (after.ru_nvcsw - before.ru_nvcsw) * 1000 / per_round
                usage[stack].append((switches, (after.ru_stime - before.ru_stime) * 1e6 / per_round))
            print(f"round {r + 1}: " + "  ".join(f"{s} {cpu[s][-1]:.1f}" for s in stacks), flush=True)
        stats = segment_middleware.stats()
    finally:
        summary = receiver.stop()
    received = summary.get("messages", -1)
    return {
        "cpu": cpu,
        "usage": usage,
        "stats": stats,
        "received": received,
        "variants": chosen,
        "overflowed": overflowed,
        "server_io": server_io,
    }


def _shortfall(before: dict[str, int], after: dict[str, int]) -> int:
    """Messages a round queued that were not delivered by its flush: dropped, failed, or
    deferred to disk (a later round that sends those rows delivers more than it queued)."""
    queued = after["queued"] - before["queued"]
    return max(0, queued - (after["delivered"] - before["delivered"]))


def report(framework: str, result: dict[str, Any]) -> None:
    cpu, usage = result["cpu"], result["usage"]
    median = statistics.median
    bare = cpu["bare"]
    loop = ", a socket round trip before each request" if result["server_io"] else ""
    print(
        f"\n{framework}{loop}: µs of process CPU per request (all threads, the flush included), "
        f"{len(bare)} rounds"
    )
    for stack, rows in cpu.items():
        line = f"  {stack:15} median {median(rows):6.1f}"
        if stack != "bare":
            added = [x - b for x, b in zip(rows, bare, strict=True)]
            line += f"   added {median(added):5.1f}"
        if stack not in ("bare", "package"):
            diff = [x - p for x, p in zip(rows, cpu["package"], strict=True)]
            lower = sum(d < 0 for d in diff)
            line += f"   vs package {median(diff):+5.1f} (lower in {lower} of {len(diff)})"
        switches, system = median(u[0] for u in usage[stack]), median(u[1] for u in usage[stack])
        line += f"   voluntary switches/1000 {switches:5.1f}   system µs {system:4.1f}"
        if result["overflowed"][stack]:
            line += f"   OVERFLOWED: {result['overflowed'][stack]} not delivered in their round"
        print(line)
    gil_free = result["variants"].get("post-gil-free")
    if isinstance(gil_free, GilFreePost):
        print(f"  post-gil-free: answers already there {gil_free.ready}, waited for {gil_free.waited}")
    print(f"  stats {result['stats']}; the receiver got {result['received']} messages")
    if any(result["overflowed"].values()):
        print("  A stack that overflowed built and posted fewer messages: its figure is not comparable.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("framework", choices=["django", "flask", "starlette"])
    parser.add_argument("--variants", default="post-off", help="comma-separated (default post-off)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds per stack (default 12)")
    parser.add_argument(
        "--per-round",
        type=int,
        help=f"requests per round (default {PER_ROUND:,}; Starlette {PER_ROUND_STARLETTE:,})",
    )
    parser.add_argument(
        "--server-io",
        action="store_true",
        help="a socket round trip before each request, which releases the GIL as a server does (WSGI)",
    )
    args = parser.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    per_round = args.per_round or (PER_ROUND_STARLETTE if args.framework == "starlette" else PER_ROUND)
    result = measure(args.framework, names, args.rounds, per_round, args.server_io)
    report(args.framework, result)
    return 1 if any(result["overflowed"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
