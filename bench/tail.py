"""Tail latency and worker CPU per request under gunicorn: bare+auth, ours+auth, naive+auth.

Why this exists next to ``overhead.py`` part 3: that part drives one sync worker with one
client, so a request never waits for anything but itself. A production server has
several workers and concurrent clients, and what a background sender costs shows up in
two places the mean hides: the **tail** (a request that arrives while the worker's sender
holds the GIL waits for it) and the **worker's CPU** (the sender's encoding and posting
is paid by the same process that serves requests, just not inside a request). The
issue's bars are on exactly those: ours' p99 within 1.3x of bare, and worker CPU per
request at most +10 % over bare.

One run measures, for three gunicorns (sync worker class, 2 workers each, the Segment
stacks posting to their own ``rawreceiver`` process):

1. latency at concurrency 2 (two client *processes*, so that one client's GIL never
   delays the other's timestamps), in interleaved chunks, each chunk preceded by an
   untimed pre-roll on the same server so the timed part starts with the stack's sender
   in its steady rhythm, and followed by a wait until the stack's receiver holds every
   message, so no stack's leftover delivery spills into the next stack's chunk;
2. worker CPU per request at concurrency 4: utime+stime of both workers
   (``/proc/<pid>/stat``) before a chunk and after the receiver has every message of it,
   so the delivery is paid by the chunk that caused it;
3. after SIGTERM, an exact delivery check: one ``page`` message per tracked request.

Two diagnostics, off by default: ``--user-baseline`` adds a fourth stack that only reads
``request.user`` (how much of ours' cost is Django loading the user), ``--gc-log`` counts
the workers' full garbage collections per phase (what the longest requests waited for).

Run: ``python bench/tail.py [--quick] [--json PATH] [--strict] [--user-baseline] [--gc-log]``.
Nothing leaves 127.0.0.1; see bench/README.md for the method and the figures.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import gzip
import hashlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import djbench  # noqa: E402
import overhead  # noqa: E402
from overhead import Gunicorn, Receiver, log, pct  # noqa: E402

STACKS = ("bare+auth", "ours+auth", "naive+auth")
BARE, OURS, NAIVE = STACKS
SENDING = (OURS, NAIVE)  # the stacks with a receiver
#: ``--user-baseline``: bare+auth plus a middleware that only reads ``request.user``. Both
#: Segment middlewares read it (to identify the visitor), which makes Django load the
#: anonymous user from the session; bare+auth never does. This stack shows how much of
#: ours' overhead is that load, which any app that looks at the user pays anyway.
USER = "bare+auth+user"
SHORT = {BARE: "bare", OURS: "ours", NAIVE: "naive", USER: "user"}
WORKERS = 2
LATENCY_CONCURRENCY = 2
CPU_CONCURRENCY = 4

P99_BAR = 1.3  # ours p99 / bare p99
CPU_AIM = 0.10  # ours worker CPU per request / bare's - 1

#: SegmentMiddleware's default FLUSH_INTERVAL (and the SDK's upload_interval): the longest
#: a message waits in a worker before its sender posts it.
FLUSH_INTERVAL = 0.5
#: Untimed load on the same server before each timed latency chunk: longer than one flush
#: interval, so that the timed requests meet the sender in its steady rhythm (a burst
#: every interval, each carrying one interval's messages) rather than freshly drained.
PREROLL_S = FLUSH_INTERVAL + 0.2
#: How long to wait for a stack's receiver to hold everything after a chunk.
DRAIN_TIMEOUT_S = FLUSH_INTERVAL + 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET = f"{djbench.PAGE_PATH}?{djbench.QUERY}"


def sizes(quick: bool) -> dict[str, Any]:
    """Request counts and the hard time limit that bound every loop."""
    if quick:
        return {
            "warmup": 100,
            "lat_requests": 800,
            "lat_chunk": 100,
            "cpu_requests": 400,
            "cpu_chunk": 100,
            "limit_s": 90.0,
        }
    return {
        "warmup": 300,
        "lat_requests": 8000,
        "lat_chunk": 500,
        "cpu_requests": 4000,
        "cpu_chunk": 500,
        "limit_s": 300.0,
    }


# ---------------------------------------------------------------------- the user baseline's app
class TouchUserMiddleware:
    """Reads ``request.user`` after the view, as both Segment middlewares do to find the
    user id, and does nothing else: the cost of loading the (anonymous) user alone."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        request.user.is_authenticated  # noqa: B018 - the load is the point
        return response


def wsgi_app() -> Any:
    """gunicorn entry point of the ``USER`` stack (``tail:wsgi_app()``): djbench's app with
    one more stack in its table, so that everything else is exactly djbench's."""
    djbench.STACKS[USER] = [*djbench.STACKS[BARE], "tail.TouchUserMiddleware"]
    return djbench.wsgi_app()


# ---------------------------------------------------------------------- receiver with a live count
def serve_receiver(argv: list[str]) -> int:
    """``rawreceiver`` plus ``GET /count`` -> ``{"messages": N}``: the messages received so far.

    The harness must know when a worker's sender has delivered everything (part 2 charges
    that delivery to the chunk; part 1 must not let it spill into the next chunk), and
    ``rawreceiver`` only decodes at exit. Bodies are decoded here only when asked, and each
    body once, so the receiver still takes no CPU while a chunk is being timed.
    """
    import rawreceiver

    count_lock = threading.Lock()
    state = {"bodies": 0, "messages": 0}

    def do_GET(self: Any) -> None:
        server = self.server
        if self.path != "/count":
            payload, status = b"{}", 404
        else:
            with count_lock:
                with server.lock:
                    new = server.bodies[state["bodies"] :]
                state["bodies"] += len(new)
                for gz, raw in new:
                    state["messages"] += len(json.loads(gzip.decompress(raw) if gz else raw).get("batch", []))
                payload, status = json.dumps({"messages": state["messages"]}).encode(), 200
        self.wfile.write(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(payload), payload)
        )

    rawreceiver._Handler.do_GET = do_GET  # type: ignore[attr-defined]
    return rawreceiver.main(argv)


def received_count(rx: Receiver) -> int:
    host, port = rx.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/count")
        return int(json.loads(conn.getresponse().read())["messages"])
    finally:
        conn.close()


# ---------------------------------------------------------------------- worker processes' CPU
def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (which may contain spaces)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2 :].split()


def children_of(master: int) -> list[int]:
    """The master's child processes, by scanning every ``/proc/<pid>/stat``'s ppid (this
    kernel has no ``/proc/<pid>/task/<tid>/children``)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if int(_stat_fields(int(name))[1]) == master:
                    out.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    return sorted(out)


def find_workers(server: Gunicorn, count: int, timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = children_of(server.proc.pid)
        if len(pids) == count:
            return pids
        time.sleep(0.1)
    found = children_of(server.proc.pid)
    raise RuntimeError(f"gunicorn {server.stack}: expected {count} workers, found {found}")


@dataclass
class Cpu:
    """CPU of a set of processes: ``ticks`` = utime+stime of all their threads, living or
    exited (clock ticks, 1/CLK_TCK s); ``sched_ns`` = the scheduler's run time of their
    living threads, in ns (a finer cross-check of the same thing); ``main_ns`` = the part
    of it spent by each process's main thread, which is the sync worker's request thread,
    so ``sched_ns - main_ns`` is what the sender (ours) or the SDK consumer thread took."""

    ticks: int = 0
    sched_ns: int = 0
    main_ns: int = 0

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.ticks - other.ticks, self.sched_ns - other.sched_ns, self.main_ns - other.main_ns)

    def __add__(self, other: Cpu) -> Cpu:
        return Cpu(self.ticks + other.ticks, self.sched_ns + other.sched_ns, self.main_ns + other.main_ns)


def cpu_of(pids: Sequence[int]) -> Cpu:
    ticks = ns = main = 0
    for pid in pids:
        f = _stat_fields(pid)
        ticks += int(f[11]) + int(f[12])  # utime, stime (fields 14 and 15 of stat)
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as s:
                    run_ns = int(s.read().split()[0])
            except (OSError, ValueError):
                continue
            ns += run_ns
            main += run_ns if tid == str(pid) else 0
    return Cpu(ticks, ns, main)


def cpu_at_rest(pids: Sequence[int], timeout: float = 5.0) -> Cpu:
    """Read the workers' CPU until two reads 150 ms apart show the same tick count: the
    worker and its sender have finished what the chunk gave them (bounded by ``timeout``)."""
    prev = cpu_of(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.15)
        cur = cpu_of(pids)
        if cur.ticks == prev.ticks:
            return cur
        prev = cur
    return prev


# ---------------------------------------------------------------------- load generator
def one_request(port: int) -> int:
    """One tracked GET on a new connection: the sync worker answers ``Connection: close``
    anyway, so every request pays a TCP connect on 127.0.0.1, the same for every stack."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", TARGET, headers=djbench.HEADERS)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def client_main(conn: Connection) -> None:
    """A client process: run jobs ``(port, preroll_until, n, deadline)`` from the pipe.

    Untimed requests until ``preroll_until`` (monotonic, the same clock in every process),
    then ``n`` timed ones; every loop is also bounded by ``deadline``. Answers with the
    latencies (ns, as bytes of an ``array('q')``), the pre-roll count and non-200 count.
    """
    while True:
        job = conn.recv()
        if job is None:
            return
        port, preroll_until, n, deadline = job
        try:
            pre = bad = 0
            mono, pc = time.monotonic, time.perf_counter_ns
            while mono() < preroll_until and pre < 20_000:
                bad += one_request(port) != 200
                pre += 1
            times = array.array("q")
            for _ in range(n):
                if mono() > deadline:
                    break
                t0 = pc()
                status = one_request(port)
                times.append(pc() - t0)
                bad += status != 200
            conn.send({"times": times.tobytes(), "preroll": pre, "bad": bad})
        except Exception as exc:  # reported by the parent, which stops the run
            conn.send({"error": f"{type(exc).__name__}: {exc}"})


@dataclass
class Chunk:
    times: list[int]
    preroll: int

    @property
    def requests(self) -> int:
        return len(self.times) + self.preroll


class Clients:
    """Client processes (spawned, so nothing of the parent is inherited), fed one job each
    per chunk; ``run`` uses the first ``concurrency`` of them."""

    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(child,), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def run(self, port: int, n: int, concurrency: int, deadline: float, preroll_s: float = 0.0) -> Chunk:
        share = [n // concurrency + (i < n % concurrency) for i in range(concurrency)]
        preroll_until = time.monotonic() + preroll_s
        for pipe, k in zip(self.pipes[:concurrency], share, strict=True):
            pipe.send((port, preroll_until, k, deadline))
        times: list[int] = []
        preroll = bad = 0
        errors = []
        for pipe in self.pipes[:concurrency]:
            if not pipe.poll(max(1.0, deadline - time.monotonic() + 15)):
                raise RuntimeError("a client process did not answer")
            res = pipe.recv()
            if "error" in res:
                errors.append(res["error"])
                continue
            times.extend(array.array("q", res["times"]))
            preroll += res["preroll"]
            bad += res["bad"]
        if errors or bad:
            raise RuntimeError(f"port {port}: {bad} non-200 answers, client errors {errors}")
        return Chunk(times, preroll)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for proc in self.procs:
            proc.join(3)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)


# ---------------------------------------------------------------------- the run
@dataclass
class Bench:
    """The servers, receivers and clients of one run, and what was sent to each stack."""

    cfg: dict[str, Any]
    stacks: tuple[str, ...] = STACKS
    servers: dict[str, Gunicorn] = field(default_factory=dict)
    receivers: dict[str, Receiver] = field(default_factory=dict)
    workers: dict[str, list[int]] = field(default_factory=dict)
    clients: Clients | None = None
    sent: dict[str, int] = field(default_factory=dict)
    drain_timeouts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sent = dict.fromkeys(self.stacks, 0)

    def rotated(self, r: int) -> tuple[str, ...]:
        """Round ``r``'s order: each stack goes first in turn, so drift hits all alike."""
        k = r % len(self.stacks)
        return self.stacks[k:] + self.stacks[:k]

    def load(self, stack: str, n: int, concurrency: int, deadline: float, preroll_s: float = 0.0) -> Chunk:
        assert self.clients is not None
        chunk = self.clients.run(self.servers[stack].port, n, concurrency, deadline, preroll_s)
        self.sent[stack] += chunk.requests
        return chunk

    def drain(self, stack: str) -> float:
        """Wait until the stack's receiver holds every message sent so far (none for bare);
        returns the seconds waited. A timeout is recorded; the final check will show it."""
        rx = self.receivers.get(stack)
        start = time.monotonic()
        if rx is None:
            return 0.0
        while True:
            got = received_count(rx)
            if got >= self.sent[stack]:
                return time.monotonic() - start
            if time.monotonic() - start > DRAIN_TIMEOUT_S:
                self.drain_timeouts.append(f"{stack}: {got}/{self.sent[stack]}")
                log(f"  {stack}: receiver has {got}/{self.sent[stack]} after {DRAIN_TIMEOUT_S:.0f} s")
                return time.monotonic() - start
            time.sleep(0.03)

    def check_workers(self, stack: str) -> None:
        """A restarted worker would make its CPU counters meaningless: fail loudly."""
        now = children_of(self.servers[stack].proc.pid)
        if now != self.workers[stack]:
            raise RuntimeError(f"gunicorn {stack}: workers changed {self.workers[stack]} -> {now}")


def histogram_ms(times: Sequence[int], top: int = 30) -> list[int]:
    """Request counts per whole millisecond of latency (index k: k..k+1 ms), the last bucket
    holding everything from ``top`` ms up: shows *where* a tail sits, e.g. a bump just
    above the interpreter's 5 ms GIL switch interval."""
    counts = [0] * (top + 1)
    for t in times:
        counts[min(top, t // 1_000_000)] += 1
    return counts


def latency_phase(b: Bench, deadline: float) -> dict[str, Any]:
    """Concurrency 2, interleaved chunks (order rotated each round), pre-roll and drain
    around each chunk; percentiles over all timed requests of a stack."""
    cfg = b.cfg
    total, chunk = cfg["lat_requests"], cfg["lat_chunk"]
    lat: dict[str, list[int]] = {s: [] for s in b.stacks}
    per_chunk: dict[str, list[dict[str, float]]] = {s: [] for s in b.stacks}
    preroll = dict.fromkeys(b.stacks, 0)
    timed_out = False
    for r in range(math.ceil(total / chunk)):
        for stack in b.rotated(r):
            if time.monotonic() > deadline:
                timed_out = True
                break
            n = min(chunk, total - len(lat[stack]))
            c = b.load(stack, n, LATENCY_CONCURRENCY, deadline, PREROLL_S)
            lat[stack].extend(c.times)
            preroll[stack] += c.preroll
            per_chunk[stack].append(
                {
                    "p50_us": pct(c.times, 50) / 1000,
                    "p99_us": pct(c.times, 99) / 1000,
                    "max_us": max(c.times, default=0) / 1000,
                    "preroll": c.preroll,
                }
            )
            b.drain(stack)
        if timed_out:
            log(f"  latency: time limit reached in round {r}")
            break
    stacks: dict[str, Any] = {}
    for stack, times in lat.items():
        stacks[stack] = {
            "requests": len(times),
            "preroll_requests": preroll[stack],
            "p50_us": pct(times, 50) / 1000,
            "p90_us": pct(times, 90) / 1000,
            "p99_us": pct(times, 99) / 1000,
            "p999_us": pct(times, 99.9) / 1000,
            "mean_us": statistics.fmean(times) / 1000 if times else math.nan,
            "max_us": max(times) / 1000 if times else math.nan,
            "over_5ms": sum(t > 5_000_000 for t in times),
            "hist_ms": histogram_ms(times),
            "chunks": per_chunk[stack],
        }
    bare = stacks[BARE]
    ratios = {
        f"{SHORT[s]}_{q}": stacks[s][f"{q}_us"] / bare[f"{q}_us"]
        for s in b.stacks
        if s != BARE
        for q in ("p50", "p90", "p99", "mean")
    }
    for s in b.stacks:  # robust to one chunk hit by something else on the machine
        stacks[s]["chunk_p99_median_us"] = (
            statistics.median(c["p99_us"] for c in per_chunk[s]) if lat[s] else math.nan
        )
        if s != BARE:
            ratios[f"{SHORT[s]}_chunk_p99"] = stacks[s]["chunk_p99_median_us"] / bare["chunk_p99_median_us"]
    if USER in stacks:
        ratios["ours_vs_user_p99"] = stacks[OURS]["p99_us"] / stacks[USER]["p99_us"]
    return {"timed_out": timed_out, "stacks": stacks, "ratios": ratios}


def cpu_phase(b: Bench, deadline: float) -> dict[str, Any]:
    """Concurrency 4, interleaved chunks; per chunk the workers' CPU from before the first
    request until the receiver holds every message and the workers are at rest."""
    cfg = b.cfg
    total, chunk = cfg["cpu_requests"], cfg["cpu_chunk"]
    done = dict.fromkeys(b.stacks, 0)
    used = {s: Cpu() for s in b.stacks}
    per_chunk: dict[str, list[float]] = {s: [] for s in b.stacks}
    waits: dict[str, list[float]] = {s: [] for s in b.stacks}
    lat: dict[str, list[int]] = {s: [] for s in b.stacks}
    timed_out = False
    for r in range(math.ceil(total / chunk)):
        for stack in b.rotated(r):
            if time.monotonic() > deadline:
                timed_out = True
                break
            pids = b.workers[stack]
            n = min(chunk, total - done[stack])
            before = cpu_of(pids)
            c = b.load(stack, n, CPU_CONCURRENCY, deadline)
            waits[stack].append(round(b.drain(stack), 3))
            spent = cpu_at_rest(pids) - before
            b.check_workers(stack)
            used[stack] += spent
            done[stack] += len(c.times)
            lat[stack].extend(c.times)
            per_chunk[stack].append(round(spent.ticks / CLK_TCK / max(1, len(c.times)) * 1e6, 1))
        if timed_out:
            log(f"  cpu: time limit reached in round {r}")
            break
    stacks: dict[str, dict[str, Any]] = {
        s: {
            "requests": done[s],
            "cpu_us_per_request": used[s].ticks / CLK_TCK / max(1, done[s]) * 1e6,
            "sched_us_per_request": used[s].sched_ns / 1000 / max(1, done[s]),
            "request_thread_us_per_request": used[s].main_ns / 1000 / max(1, done[s]),
            "other_threads_us_per_request": (used[s].sched_ns - used[s].main_ns) / 1000 / max(1, done[s]),
            "cpu_seconds": used[s].ticks / CLK_TCK,
            "chunks_us_per_request": per_chunk[s],
            "drain_wait_s": waits[s],
            "p50_us": pct(lat[s], 50) / 1000,
            "p99_us": pct(lat[s], 99) / 1000,
        }
        for s in b.stacks
    }
    bare = stacks[BARE]
    added = {
        f"{SHORT[s]}_{key}": stacks[s][key] / bare[key] - 1
        for s in b.stacks
        if s != BARE
        for key in ("cpu_us_per_request", "sched_us_per_request")
    }
    if USER in stacks:
        user = stacks[USER]["cpu_us_per_request"]
        added["ours_vs_user_cpu_us_per_request"] = stacks[OURS]["cpu_us_per_request"] / user - 1
    return {"timed_out": timed_out, "clk_tck": CLK_TCK, "stacks": stacks, "added": added}


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("hard time limit of the whole run reached")


#: ``--gc-log``: a gunicorn config whose ``post_fork`` hook logs every full (generation 2)
#: collection of a worker, with its duration: ``<monotonic> <ms> <collected>`` per line.
GC_HOOKS = """\
import gc, os, time


def post_fork(server, worker):
    name = "gc-%s-%d.log" % (os.environ["BENCH_STACK"], os.getpid())
    log = open(os.path.join(os.environ["BENCH_GC_LOG_DIR"], name), "a", buffering=1)
    start = [0]

    def timed(phase, info):
        if phase == "start":
            start[0] = time.perf_counter_ns()
        elif info["generation"] == 2:
            ms = (time.perf_counter_ns() - start[0]) / 1e6
            log.write("%.4f %.2f %d\\n" % (time.monotonic(), ms, info["collected"]))

    gc.callbacks.append(timed)
"""


def full_collections(
    logdir: str, stacks: Sequence[str], windows: dict[str, tuple[float, float]]
) -> dict[str, Any]:
    """Per stack and phase: the workers' full collections (count, total and longest ms)."""
    out: dict[str, Any] = {}
    for stack in stacks:
        events: list[tuple[float, float]] = []
        for path in Path(logdir).glob(f"gc-{stack}-*.log"):
            for line in path.read_text().splitlines():
                t, ms, _ = line.split()
                events.append((float(t), float(ms)))
        out[stack] = {}
        for phase, (t0, t1) in windows.items():
            inside = [ms for t, ms in events if t0 <= t <= t1]
            out[stack][phase] = {
                "count": len(inside),
                "total_ms": round(sum(inside), 1),
                "max_ms": max(inside, default=0),
            }
    return out


def run(quick: bool, user_baseline: bool = False, gc_log: bool = False) -> dict[str, Any]:
    cfg = sizes(quick)
    started = time.monotonic()
    limit = cfg["limit_s"]
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(limit))  # the backstop; the phases stop themselves well before it
    logdir = tempfile.mkdtemp(prefix="segment-bench-tail-")
    b = Bench(cfg, (*STACKS, USER) if user_baseline else STACKS)
    out: dict[str, Any] = {"sizes": cfg, "stacks": list(b.stacks)}
    launch = [str(Path(__file__).resolve()), "--serve-receiver", "--detail"]
    if gc_log:  # the servers inherit the environment
        Path(logdir, "gc_hooks.py").write_text(GC_HOOKS)
        os.environ["GUNICORN_CMD_ARGS"] = f"-c {Path(logdir, 'gc_hooks.py')}"
        os.environ["BENCH_GC_LOG_DIR"] = logdir
    windows: dict[str, tuple[float, float]] = {}
    try:
        for stack in SENDING:
            b.receivers[stack] = Receiver(limit + 60, detail=True, launch=launch)
        for stack in b.stacks:
            rx = b.receivers.get(stack)
            app = "tail:wsgi_app()" if stack == USER else "djbench:wsgi_app()"
            b.servers[stack] = Gunicorn(stack, rx.url if rx else None, logdir, workers=WORKERS, app=app)
        b.clients = Clients(max(LATENCY_CONCURRENCY, CPU_CONCURRENCY))
        for server in b.servers.values():
            server.wait_ready()
        for stack, server in b.servers.items():
            b.workers[stack] = find_workers(server, WORKERS)
        log(f"tail: servers up after {time.monotonic() - started:.1f} s; warm-up ...")
        for stack in b.stacks:
            b.load(stack, cfg["warmup"], CPU_CONCURRENCY, started + limit * 0.3)
            b.drain(stack)
        log("tail: latency at concurrency 2 ...")
        t0 = time.monotonic()
        out["latency"] = latency_phase(b, started + limit * 0.6)
        t1 = time.monotonic()
        windows["latency"] = (t0, t1)
        log("tail: worker CPU at concurrency 4 ...")
        out["cpu"] = cpu_phase(b, started + limit * 0.85)
        windows["cpu"] = (t1, time.monotonic())
        for stack in b.stacks:
            b.check_workers(stack)
    except BaseException:
        log(f"tail: failed; gunicorn logs kept in {logdir}")
        raise
    finally:
        signal.alarm(0)
        if b.clients is not None:
            b.clients.close()
        exits = {s: server.stop(timeout=15) for s, server in b.servers.items()}
        received = {s: rx.stop() for s, rx in b.receivers.items()}
    if gc_log:
        out["full_collections"] = full_collections(logdir, b.stacks, windows)
    shutil.rmtree(logdir, ignore_errors=True)  # kept when something raised: the logs are there
    sent = {s: b.sent[s] for s in SENDING}
    delivery: dict[str, Any] = {"sent": sent, "received": received}
    delivery["ok"] = {s: overhead.framework_delivered_ok(delivery, s) for s in SENDING}
    delivery["drain_timeouts"] = b.drain_timeouts
    out["delivery"] = delivery
    out["exit"] = {s: {"code": code, "seconds": round(sec, 2)} for s, (code, sec) in exits.items()}
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


# ---------------------------------------------------------------------- report
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(res: dict[str, Any]) -> list[str]:
    """Print the figures and the summary; returns the missed bars and failed checks."""
    failures: list[str] = []
    lat, cpu, d = res["latency"], res["cpu"], res["delivery"]
    print(
        f"\n== latency: gunicorn sync, {WORKERS} workers per stack, concurrency {LATENCY_CONCURRENCY} "
        f"({LATENCY_CONCURRENCY} client processes, new connection per request) =="
    )
    print(f"   chunks of {res['sizes']['lat_chunk']} rotating between stacks, each after a {PREROLL_S} s")
    print("   untimed pre-roll on the same server, followed by a wait until its receiver has every message")
    print(
        f"   {'stack':<14}{'requests':>7}{'p50 µs':>9}{'p90':>8}{'p99':>8}{'p99.9':>8}{'mean':>8}{'max':>8}"
        f"{'>5ms':>6}"
    )
    for name, v in lat["stacks"].items():
        print(
            f"   {name:<14}{v['requests']:>7}{v['p50_us']:>9.0f}{v['p90_us']:>8.0f}{v['p99_us']:>8.0f}"
            f"{v['p999_us']:>8.0f}{v['mean_us']:>8.0f}{v['max_us']:>8.0f}{v['over_5ms']:>6}"
        )
    r = lat["ratios"]
    others = [SHORT[s] for s in lat["stacks"] if s != BARE]
    print(
        "   vs bare: "
        + "   ".join(
            f"{o} p50 {r[f'{o}_p50']:.2f}x  p90 {r[f'{o}_p90']:.2f}x  p99 {r[f'{o}_p99']:.2f}x"
            for o in others
        )
    )
    chunk_p99 = {SHORT[s]: [c["p99_us"] for c in v["chunks"]] for s, v in lat["stacks"].items()}
    print(
        "   per-chunk p99 (min / median / max µs): "
        + "   ".join(
            f"{s} {min(v):.0f} / {statistics.median(v):.0f} / {max(v):.0f}" for s, v in chunk_p99.items() if v
        )
    )

    print(
        f"\n== worker CPU per request: concurrency {CPU_CONCURRENCY} ({CPU_CONCURRENCY} client processes), "
        f"utime+stime of both workers, delivery included =="
    )
    print("   cpu = utime+stime (/proc/<pid>/stat); sched = schedstat run time of the living threads,")
    print("   split into the request thread (each worker's main thread) and the others (sender / consumer)")
    print(
        f"   {'stack':<14}{'requests':>7}{'cpu µs/req':>12}{'vs bare':>9}{'sched':>8}{'request':>9}"
        f"{'others':>8}   per chunk (µs/req)   c4 p50/p99 µs"
    )
    for name, v in cpu["stacks"].items():
        rel = v["cpu_us_per_request"] / cpu["stacks"][BARE]["cpu_us_per_request"] - 1
        chunks = " ".join(f"{x:.0f}" for x in v["chunks_us_per_request"])
        print(
            f"   {name:<14}{v['requests']:>7}{v['cpu_us_per_request']:>12.1f}{rel * 100:>+8.1f}%"
            f"{v['sched_us_per_request']:>8.1f}{v['request_thread_us_per_request']:>9.1f}"
            f"{v['other_threads_us_per_request']:>8.1f}   {chunks}   {v['p50_us']:.0f}/{v['p99_us']:.0f}"
        )

    p99_ratio, ours_cpu = r["ours_p99"], cpu["added"]["ours_cpu_us_per_request"]
    p99_ok, cpu_ok = p99_ratio <= P99_BAR, ours_cpu < CPU_AIM
    print("\n== summary ==")
    print(
        f"ours p99 / bare p99      {p99_ratio:.2f}x   [bar <= {P99_BAR}x: {verdict(p99_ok)}]   "
        f"(naive/bare {r['naive_p99']:.2f}x; median of per-chunk p99s: ours/bare {r['ours_chunk_p99']:.2f}x, "
        f"naive/bare {r['naive_chunk_p99']:.2f}x)"
    )
    print(
        f"worker CPU per request   ours/bare - 1 = {ours_cpu * 100:+.1f} %   [aim < +{CPU_AIM * 100:.0f} %: "
        f"{verdict(cpu_ok)}]   (naive/bare - 1 = {cpu['added']['naive_cpu_us_per_request'] * 100:+.1f} %; "
        f"sched cross-check ours {cpu['added']['ours_sched_us_per_request'] * 100:+.1f} %, "
        f"naive {cpu['added']['naive_sched_us_per_request'] * 100:+.1f} %)"
    )
    if "ours_vs_user_p99" in r:
        print(
            f"against {USER} (reads request.user, sends nothing): ours p99 {r['ours_vs_user_p99']:.2f}x, "
            f"worker CPU {cpu['added']['ours_vs_user_cpu_us_per_request'] * 100:+.1f} %; the user load "
            f"alone: p99 {r['user_p99']:.2f}x, CPU {cpu['added']['user_cpu_us_per_request'] * 100:+.1f} % "
            "over bare (diagnostic, no bar)"
        )
    for stack, phases in res.get("full_collections", {}).items():
        print(
            f"full GC passes in the workers, {stack:<14} "
            + "   ".join(
                f"{phase}: {v['count']} ({v['total_ms']:.0f} ms, longest {v['max_ms']:.0f} ms)"
                for phase, v in phases.items()
            )
        )
    for stack in SENDING:
        got = d["received"][stack]
        print(
            f"delivery {stack:<11} sent {d['sent'][stack]} tracked requests (warm-up and pre-roll included); "
            f"receiver after SIGTERM: {got.get('messages')} messages, types {got.get('types')}, "
            f"{got.get('message_ids')} distinct messageIds, paths {got.get('paths')}: "
            f"{'ok' if d['ok'][stack] else 'MISMATCH'}"
        )
    if not p99_ok:
        failures.append(f"ours p99 ratio {p99_ratio:.2f} > {P99_BAR}")
    if not cpu_ok:
        failures.append(f"ours worker CPU {ours_cpu * 100:+.1f} % >= +{CPU_AIM * 100:.0f} %")
    if lat["timed_out"] or cpu["timed_out"]:
        failures.append("time limit reached (fewer requests than asked)")
    failures += [f"delivery mismatch: {s}" for s, ok in d["ok"].items() if not ok]
    return failures


def package_fingerprint() -> str:
    """A hash of the package's source as measured: the package may change between runs
    (uncommitted work included), and figures are only comparable for the same code."""
    digest = hashlib.sha1()
    for path in sorted((HERE.parent / "segment_middleware").rglob("*.py")):
        digest.update(str(path.relative_to(HERE.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-receiver"]:  # a receiver process started by this script
        return serve_receiver(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a bar is missed too")
    parser.add_argument(
        "--user-baseline",
        action="store_true",
        help=f"also measure {USER} (bare+auth reading request.user): how much of ours' cost is the user load",
    )
    parser.add_argument(
        "--gc-log",
        action="store_true",
        help="log the workers' full (gen 2) garbage collections and count them per stack and phase",
    )
    args = parser.parse_args(argv)

    import django
    import gunicorn
    import segment.analytics.version as sdk_version

    meta = {
        "mode": "quick" if args.quick else "full",
        "package_sha1": package_fingerprint(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "gunicorn": gunicorn.__version__,
        "sdk": sdk_version.VERSION,
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    res = {**meta, **run(args.quick, args.user_baseline, args.gc_log)}
    res["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    failures = report(res)
    print(
        f"\n({res['mode']} run, {res['seconds']} s, Python {res['python']}, Django {res['django']}, gunicorn "
        f"{res['gunicorn']}, SDK {res['sdk']}, {res['cpus']} CPUs, load average {res['loadavg_start']} -> "
        f"{res['loadavg']}, segment_middleware/*.py sha1 {res['package_sha1'][:12]})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    hard = [f for f in failures if f.startswith("delivery")]
    if hard or (args.strict and failures):
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
