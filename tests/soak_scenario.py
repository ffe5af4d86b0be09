"""The soak of issue 13: a Flask app under gunicorn, heavy load, a faulty endpoint, restarts.

Shared by ``tests/test_soak.py`` (30 s) and ``bench/outage.py --soak SECONDS`` (10 minutes
and any other length). One run:

1. a ``SegmentReceiver`` on 127.0.0.1 in ``chaos()`` mode (by default 5 % resets, 10 % 500,
   5 % 429 with ``Retry-After: 1``, 5 % 3 s stalls);
2. ``tests/apps/soak_app.py`` under real gunicorn (sync workers), pointed at it, with a
   fresh ``LOCAL_STORE`` and the settings of :class:`SoakConfig` (package defaults except a
   small ``MAX_QUEUE_SIZE``, so the in-memory queue really overflows, and 5 s
   ``SHUTDOWN_TIMEOUT``/``TIMEOUT``; ``MAX_IN_FLIGHT`` and ``SPOOL_MAX_MB`` are parameters);
3. load from several client processes (each its own GIL, none shared with the receiver),
   paced to ``rate`` requests/s in all, each request ``/?n=<marker>`` with a marker no
   other request has, so its page call is found on the receiver by
   ``properties.search``;
4. every ``kill_every`` seconds SIGTERM to the oldest booted worker (the arbiter starts a
   new one): the restarts a deploy or ``--max-requests`` make;
5. at the end: load stops, the endpoint turns healthy, SIGTERM to the master (the workers
   flush within ``SHUTDOWN_TIMEOUT`` and exit), then ``segment-middleware replay`` sends
   whatever was spooled, as an operator would.

What is counted (:class:`SoakResult`): requests answered 200; page calls received, unique
by marker; **lost** = markers answered 200 whose page call never arrived; duplicates by
messageId, split into the explainable ones (received live *and* again from the replay: a
batch cut off in flight at a shutdown, which Segment de-duplicates) and the rest; and per
worker process the ``stats()`` it logged at exit (``segment: stats at exit (pid N):
{...}``, INFO on ``segment_middleware``), which must add up: ``queued == delivered +
failed + dropped + spooled + blocked + deferred``. A version of the package that does not
log that line, or lacks a key, is reported as such, not guessed around.

Everything stays on 127.0.0.1; every wait and loop is bounded in time and count.
"""

from __future__ import annotations

import array
import collections
import contextlib
import dataclasses
import http.client
import json
import math
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # bench/outage.py --soak and spawned clients import this from elsewhere
    sys.path.insert(0, str(HERE))

from segment_receiver import SegmentReceiver  # noqa: E402
from servers import BIN, _catches, _children, gunicorn  # noqa: E402

from segment_middleware import ledger  # noqa: E402

__all__ = ["STAT_KEYS", "SoakConfig", "SoakResult", "run_soak"]

APPS = HERE / "apps"
WRITE_KEY = "soak-write-key"
#: The keys a stats-at-exit line must carry: stats()' own (``deferred`` is on disk, waiting).
STAT_KEYS = ledger.STAT_KEYS
#: The right-hand side of the accounting identity at a clean exit (``retried`` is not an outcome).
SETTLED_KEYS = ("delivered", "stored", "failed", "dropped", "spooled", "blocked", "deferred")
STATS_LINE = re.compile(r"segment: stats at exit \(pid (\d+)\): (\{.*\})\s*$")
DROP_LINE = re.compile(r"segment: dropped (\d+) message\(s\): (.+?)\s*$")
SPOOL_LINE = re.compile(r"segment: (\d+) message\(s\) not delivered \((.*?)\)")
DEFER_LINE = re.compile(r"segment: deferred (\d+) message\(s\) to ")
PACKAGE_LINE = re.compile(r"\] (DEBUG|INFO|WARNING|ERROR|CRITICAL) (segment: .*)$")  # soak_app's format
UNKNOWN_SETTING = re.compile(r"soak_app: setting unknown to this segment_middleware, left out: (\S+)")
REPLAY_SENT = re.compile(r"replay: sent (\d+) message\(s\)")
REQUEST_TIMEOUT = 15.0  # a client request; none should come near it (no request waits on Segment)
CLIENT_START_TIMEOUT = 60.0  # spawned clients importing and reporting ready
FLUSH_AT = 100  # the package's default batch size: the duplicate bound counts batches of it


@dataclass
class SoakConfig:
    """One soak's knobs. Settings left ``None`` are not passed: the package's default applies."""

    seconds: float = 30.0
    rate: float = 1000.0  # requests/s over all clients: a target, the machine may allow less
    clients: int = 4  # client processes, each one request at a time on its own connection
    workers: int = 2
    kill_every: float = 20.0  # seconds between worker SIGTERMs; 0: none
    preload: bool = False
    # Segment settings (SEGMENT_<NAME> in app.config). MAX_QUEUE_SIZE is small so that the
    # in-memory queue overflows: with one sender posting one batch at a time, 2,000 dropped
    # a third of 30,000 messages in 30 s; with MAX_IN_FLIGHT=3 the store then showed ~20
    # deferred rows, and with 500 ~3,200: the overflow path is the one under test.
    max_queue_size: int | None = 500
    shutdown_timeout: float | None = 5.0
    timeout: float | None = None  # the default 15 s: a 3 s stall never times a post out
    max_in_flight: int | None = 3
    spool_max_mb: float | None = 512.0
    expect_overflow: bool = True  # a problem if the queue never overflowed to disk
    extra_settings: dict[str, Any] = field(default_factory=dict)  # any other SEGMENT_* by name
    # The endpoint's fault mix (SegmentReceiver.chaos)
    reset: float = 0.05
    error: float = 0.10
    rate_limited: float = 0.05
    retry_after: int = 1
    stall: float = 0.05
    stall_seconds: float = 3.0
    seed: int | None = None
    # Where the store and the server log go; None: a new temporary directory (kept).
    workdir: Path | None = None

    def segment_settings(self) -> dict[str, Any]:
        named = {
            "MAX_QUEUE_SIZE": self.max_queue_size,
            "SHUTDOWN_TIMEOUT": self.shutdown_timeout,
            "TIMEOUT": self.timeout,
            "MAX_IN_FLIGHT": self.max_in_flight,
            "SPOOL_MAX_MB": self.spool_max_mb,
        }
        named.update({key.upper(): value for key, value in self.extra_settings.items()})
        return {key: value for key, value in named.items() if value is not None}

    def kill_times(self) -> list[float]:
        if self.kill_every <= 0:
            return []
        count = math.ceil(self.seconds / self.kill_every) - 1  # none at (or after) the end
        return [self.kill_every * (k + 1) for k in range(max(0, count))]


@dataclass
class Kill:
    at: float  # seconds into the load
    pid: int


@dataclass
class SoakResult:
    """What one soak measured; :meth:`problems` is what the test asserts, :meth:`report` the figures."""

    config: SoakConfig
    duration: float = 0.0  # seconds of load (the slowest client's)
    sent: int = 0
    answered: int = 0  # 200s
    answered_markers: set[int] = field(default_factory=set, repr=False)
    statuses: dict[int, int] = field(default_factory=dict)
    client_errors: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p99, max of answered requests
    received_messages: int = 0  # accepted by the receiver, copies included
    received_pages: int = 0  # unique markers among received page calls
    lost: list[int] = field(default_factory=list)  # answered 200, no page call received
    received_unanswered: int = 0  # page calls of requests whose client saw no 200 (not a problem)
    tracked_twice: list[int] = field(default_factory=list)  # markers with page calls of 2+ messageIds
    live_messages: int = 0  # received before the replay
    replayed_messages: int = 0  # received from the replay
    explainable_duplicates: int = 0  # extra copies: once live, once from the replay
    unexplained_duplicates: dict[str, int] = field(default_factory=dict)  # messageId -> copies
    duplicate_bound: int = 0
    chaos_counts: dict[str, int] = field(default_factory=dict)
    receiver_statuses: dict[int, int] = field(default_factory=dict)  # ingest requests by status
    kills: list[Kill] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)  # every worker seen alive
    stats: dict[int, dict[str, int]] = field(default_factory=dict)  # pid -> stats at exit
    drop_lines: dict[str, int] = field(default_factory=dict)  # reason -> count, from the log
    spool_lines: dict[str, int] = field(default_factory=dict)  # reason -> count, from the log
    deferred_logged: int = 0  # messages the log says went to disk because the queue was full
    log_lines: dict[str, int] = field(default_factory=dict)  # other package lines, digits as N -> count
    store_rows: dict[str, int] = field(default_factory=dict)  # the store's rows by kind before replay
    tracebacks: int = 0
    unknown_settings: list[str] = field(default_factory=list)
    server_exit: int | None = None
    server_exit_seconds: float | None = None
    replay_exit: int | None = None
    replay_sent: int | None = None
    replay_output: str = ""
    errors: list[str] = field(default_factory=list)  # the harness's own troubles (timeouts, ...)
    log_path: str = ""

    # ------------------------------------------------------------------ derived figures
    @property
    def rate(self) -> float:
        return self.sent / self.duration if self.duration else 0.0

    def missing_stats(self) -> list[int]:
        return [pid for pid in self.worker_pids if pid not in self.stats]

    def stats_problems(self) -> dict[int, str]:
        """pid -> what is wrong with its stats line (missing keys, the identity not holding)."""
        found: dict[int, str] = {}
        for pid, stats in sorted(self.stats.items()):
            absent = [key for key in STAT_KEYS if key not in stats]
            if absent:
                found[pid] = f"no {', '.join(absent)} in {stats}"
                continue
            settled = sum(stats[key] for key in SETTLED_KEYS)
            if stats["queued"] != settled:
                found[pid] = f"queued {stats['queued']} != {' + '.join(SETTLED_KEYS)} = {settled}"
        return found

    def totals(self) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for stats in self.stats.values():
            total.update({k: v for k, v in stats.items() if isinstance(v, int)})
        return dict(total)

    def problems(self, min_rate: float = 0.0) -> list[str]:
        """Everything the soak promises, as one list (empty: it held), so a failure shows all of it."""
        c = self.config
        found = [f"harness: {e}" for e in self.errors]
        if self.lost:
            found.append(f"{len(self.lost)} page call(s) lost (markers {self.lost[:10]}...)")
        if self.tracked_twice:
            found.append(f"{len(self.tracked_twice)} request(s) tracked twice: {self.tracked_twice[:10]}")
        if self.unexplained_duplicates:
            sample = dict(list(self.unexplained_duplicates.items())[:5])
            found.append(
                f"{len(self.unexplained_duplicates)} duplicate messageId(s) not from a replay: {sample}"
            )
        if self.explainable_duplicates > self.duplicate_bound:
            found.append(
                f"{self.explainable_duplicates} duplicates from the replay, more than could be in flight at "
                f"{len(self.worker_pids)} shutdowns ({self.duplicate_bound})"
            )
        if not self.worker_pids:
            found.append("no gunicorn worker was ever seen")
        missing = self.missing_stats()
        if missing:
            found.append(f"no 'stats at exit' line from worker(s) {missing}")
        for pid, problem in self.stats_problems().items():
            found.append(f"worker {pid}: {problem}")
        if self.rate < min_rate:
            found.append(f"load reached {self.rate:.0f} requests/s, under {min_rate:.0f}")
        if self.sent and self.answered < 0.99 * self.sent:
            found.append(f"only {self.answered} of {self.sent} requests answered 200: {self.statuses}")
        asked = {"reset": c.reset, "error": c.error, "rate_limited": c.rate_limited, "stall": c.stall}
        total = sum(self.chaos_counts.values())
        for outcome, p in asked.items():
            if p > 0 and not self.chaos_counts.get(outcome):
                found.append(f"the endpoint never answered {outcome} (chaos counts {self.chaos_counts})")
        faults = total - self.chaos_counts.get("normal", 0)
        if total and abs(faults / total - sum(asked.values())) > 0.1:
            found.append(f"fault share {faults / total:.2f}, asked {sum(asked.values()):.2f}")
        if len(self.kills) < len(c.kill_times()):
            found.append(f"{len(self.kills)} worker restart(s), {len(c.kill_times())} scheduled")
        if self.server_exit != 0:
            found.append(f"gunicorn exited with {self.server_exit}")
        if self.replay_exit != 0:
            found.append(f"replay exited with {self.replay_exit}: {self.replay_output.strip()[-300:]}")
        if self.unknown_settings:
            found.append(f"settings this package does not know, left out: {self.unknown_settings}")
        if c.expect_overflow and not self.deferred_logged:
            found.append("the queue never overflowed to disk (no 'segment: deferred' log line)")
        if self.tracebacks:
            found.append(f"{self.tracebacks} traceback(s) in the server log ({self.log_path})")
        return found

    def report(self) -> str:
        c = self.config
        lat = self.latency_ms
        lines = [
            f"soak: {c.workers} sync workers, {c.clients} clients, target {c.rate:.0f}/s for "
            f"{c.seconds:.0f} s, settings {c.segment_settings()}",
            f"  load      {self.duration:.1f} s, {self.sent} requests, {self.rate:.0f}/s, answered 200: "
            f"{self.answered}, statuses {self.statuses}, client errors {self.client_errors or 0}",
            f"  latency   p50 {lat.get('p50', 0):.1f} ms, p99 {lat.get('p99', 0):.1f} ms, "
            f"max {lat.get('max', 0):.1f} ms",
            f"  endpoint  chaos {self.chaos_counts}, ingest statuses {self.receiver_statuses}",
            f"  restarts  {len(self.kills)} at "
            + ", ".join(f"{k.at:.0f}s (pid {k.pid})" for k in self.kills),
            f"  exit      gunicorn {self.server_exit} in {self.server_exit_seconds or 0:.1f} s; "
            f"replay {self.replay_exit}, sent {self.replay_sent}",
            f"  received  {self.received_messages} messages ({self.live_messages} live, "
            f"{self.replayed_messages} replayed), {self.received_pages} page calls by marker, "
            f"{self.received_unanswered} of requests not answered 200",
            f"  lost      {len(self.lost)}",
            f"  dupes     {self.explainable_duplicates} explainable (live and replayed, or sent again from "
            f"disk after a shutdown; bound "
            f"{self.duplicate_bound}), {len(self.unexplained_duplicates)} not; tracked twice "
            f"{len(self.tracked_twice)}",
            f"  overflow  log: deferred {self.deferred_logged}, dropped {self.drop_lines or 0}, "
            f"spooled {self.spool_lines or 0}; stats: "
            f"dropped {self.totals().get('dropped', '-')}, deferred {self.totals().get('deferred', '-')}; "
            f"store rows before replay {self.store_rows or 0}",
            "  per process (stats at exit):",
        ]
        for pid in sorted(set(self.worker_pids) | set(self.stats)):
            stats = self.stats.get(pid)
            text = (
                "NO STATS LINE" if stats is None else " ".join(f"{k} {stats.get(k, '-')}" for k in STAT_KEYS)
            )
            problem = self.stats_problems().get(pid)
            lines.append(f"    {pid:>7}  {text}" + (f"  <- {problem}" if problem else ""))
        totals = self.totals()
        lines.append("    total    " + " ".join(f"{k} {totals.get(k, '-')}" for k in STAT_KEYS))
        if self.log_lines:
            lines.append("  other package log lines (count x line, digits as N):")
            lines.extend(f"    {count:>5} x {text}" for text, count in list(self.log_lines.items())[:12])
        if self.unknown_settings:
            lines.append(f"  NOT APPLIED (unknown to this package): {self.unknown_settings}")
        if self.errors:
            lines.append(f"  harness errors: {self.errors}")
        lines.append(f"  server log: {self.log_path}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["answered_markers"]
        data["config"]["workdir"] = str(self.config.workdir) if self.config.workdir else None
        data["lost"] = self.lost[:1000]
        data["rate"] = self.rate
        data["totals"] = self.totals()
        data["missing_stats"] = self.missing_stats()
        data["stats_problems"] = self.stats_problems()
        data["problems"] = self.problems()
        return data


# ---------------------------------------------------------------------- the client processes
def _client(
    port: int,
    index: int,
    clients: int,
    rate: float,
    seconds: float,
    go: Event,
    out: Connection,
) -> None:
    """One client process: ``/?n=<index + clients * i>`` paced to ``rate``/s until ``seconds``
    pass, one request at a time (gunicorn's sync workers close every connection; it is
    reopened by http.client). Sends back the markers answered 200 and the latencies."""
    out.send("ready")
    if not go.wait(CLIENT_START_TIMEOUT):
        out.send(None)
        return
    interval = 1.0 / rate
    limit = int(rate * seconds * 1.1) + 10  # a count bound on top of the time bound
    answered = array.array("q")
    latencies = array.array("d")
    statuses: collections.Counter[int] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    start = time.monotonic()
    end = start + seconds
    sent = 0
    while sent < limit:
        now = time.monotonic()
        if now >= end:
            break
        due = start + sent * interval
        if due > now:
            time.sleep(min(due - now, end - now))
        marker = index + clients * sent
        sent += 1
        t0 = time.perf_counter()
        try:
            conn.request("GET", f"/?n={marker}")
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            errors[type(exc).__name__] += 1
            conn.close()
            continue
        latencies.append(time.perf_counter() - t0)
        statuses[response.status] += 1
        if response.status == 200:
            answered.append(marker)
    conn.close()
    out.send(
        {
            "sent": sent,
            "elapsed": time.monotonic() - start,
            "answered": answered.tobytes(),
            "latencies": latencies.tobytes(),
            "statuses": dict(statuses),
            "errors": dict(errors),
        }
    )


class _Clients:
    """The client processes (spawned: nothing of the receiver's threads is forked into them)."""

    def __init__(self, port: int, config: SoakConfig) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.go = ctx.Event()
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        per_client = config.rate / config.clients
        for index in range(config.clients):
            ours, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_client,
                args=(port, index, config.clients, per_client, config.seconds, self.go, theirs),
                name=f"soak-client-{index}",
                daemon=True,
            )
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    def start(self) -> None:
        deadline = time.monotonic() + CLIENT_START_TIMEOUT
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())) or pipe.recv() != "ready":
                raise RuntimeError("a soak client did not start")
        self.go.set()

    def running(self) -> bool:
        """Some client has not sent its results yet (a dead one reads as EOF, so it counts as done)."""
        return not all(pipe.poll() for pipe in self.pipes)

    def results(self, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found = []
        for pipe in self.pipes:
            if pipe.poll(max(0.0, deadline - time.monotonic())):
                try:
                    result = pipe.recv()
                except EOFError:  # the client died without a word: counted as missing
                    continue
                if result is not None:
                    found.append(result)
        return found

    def close(self) -> None:
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()


# ---------------------------------------------------------------------- the workers
class _Workers:
    """The gunicorn workers, seen by polling the master's children in /proc."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.first_seen: dict[int, float] = {}

    def poll(self) -> list[int]:
        alive = _children(self.master)
        now = time.monotonic()
        for pid in alive:
            self.first_seen.setdefault(pid, now)
        return alive

    def oldest_booted(self) -> int | None:
        """The longest-running worker past its signal set-up (a SIGTERM before that is lost;
        see servers.Server._workers_booted), so that restarts take each worker in turn."""
        booted = [pid for pid in self.poll() if _catches(pid, signal.SIGABRT)]
        return min(booted, key=lambda pid: self.first_seen[pid]) if booted else None


# ---------------------------------------------------------------------- the run
def run_soak(config: SoakConfig, progress: Callable[[str], None] | None = None) -> SoakResult:
    """Run one soak (see the module docstring) and measure it; raises only for set-up failures."""
    say = progress or (lambda _text: None)
    if config.workdir is None:
        config = dataclasses.replace(config, workdir=Path(tempfile.mkdtemp(prefix="segment-soak-")))
    assert config.workdir is not None
    workdir = config.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "spool.sqlite3"
    result = SoakResult(config)
    with SegmentReceiver(write_key=WRITE_KEY) as receiver:
        env = {
            "SEGMENT_WRITE_KEY": WRITE_KEY,
            "SEGMENT_HOST": receiver.url,
            "SEGMENT_LOCAL_STORE": str(store),
            "SOAK_SEGMENT_SETTINGS": json.dumps(config.segment_settings()),
            "TEST_TMP": str(workdir),
        }
        args = ["--workers", str(config.workers), "--worker-class", "sync"]
        if config.preload:
            args.append("--preload")
        server = gunicorn("soak_app:app", env, *args, chdir=APPS)
        result.log_path = str(server.log_path)
        clients: _Clients | None = None
        try:
            server.wait_ready()
            say(f"gunicorn up on port {server.port}; receiver {receiver.url}")
            receiver.chaos(
                reset=config.reset,
                error=config.error,
                rate_limited=config.rate_limited,
                retry_after=config.retry_after,
                stall=config.stall,
                stall_seconds=config.stall_seconds,
                seed=config.seed,
            )
            clients = _Clients(server.port, config)
            clients.start()
            workers = _Workers(server.proc.pid)
            _drive(config, clients, workers, result, say)
            outputs = clients.results(timeout=REQUEST_TIMEOUT + 10)
            if len(outputs) < config.clients:
                result.errors.append(f"{config.clients - len(outputs)} client(s) sent no results")
            _add_client_results(result, outputs)
            say(f"load done: {result.sent} requests in {result.duration:.1f} s ({result.rate:.0f}/s)")
            receiver.healthy()
            workers.poll()
            try:
                result.server_exit = server.stop(timeout=max(60.0, 4 * (config.shutdown_timeout or 5.0)))
                result.server_exit_seconds = server.exit_seconds
            except AssertionError as exc:
                result.errors.append(str(exc).splitlines()[0])
            result.worker_pids = sorted(workers.first_seen)
            say(f"gunicorn stopped ({result.server_exit}) in {result.server_exit_seconds or 0:.1f} s")
        finally:
            if clients is not None:
                clients.close()
            server.kill()
        _settle(receiver, config, result)
        result.store_rows = _store_rows(store)
        through_disk = _stored_ids(store)
        live = len(receiver.messages)
        _replay(receiver, store, result)
        say(f"replay: {result.replay_output.strip()}")
        _settle(receiver, config, result)
        _count_received(receiver, live, result, through_disk)
        result.chaos_counts = receiver.chaos_counts
        ingest = collections.Counter(r.status for r in receiver.requests if r.path.startswith("/v1/"))
        result.receiver_statuses = dict(sorted(ingest.items()))
    _read_log(Path(result.log_path), result)
    # At each worker's shutdown at most MAX_IN_FLIGHT batches (one, where the setting is
    # unknown) of FLUSH_AT messages can be cut off in flight, spooled and replayed.
    shutdowns = max(len(result.worker_pids), len(result.stats))
    in_flight = 1 if "SEGMENT_MAX_IN_FLIGHT" in result.unknown_settings else (config.max_in_flight or 3)
    flush_at = int(config.segment_settings().get("FLUSH_AT", FLUSH_AT))
    result.duplicate_bound = shutdowns * max(1, in_flight) * flush_at
    return result


def _drive(
    config: SoakConfig, clients: _Clients, workers: _Workers, result: SoakResult, say: Callable[[str], None]
) -> None:
    """While the clients run: watch the workers, SIGTERM one at each scheduled time."""
    start = time.monotonic()
    deadline = start + config.seconds + REQUEST_TIMEOUT + 10
    pending = config.kill_times()
    while clients.running() and time.monotonic() < deadline:
        workers.poll()
        elapsed = time.monotonic() - start
        if pending and elapsed >= pending[0]:
            pid = workers.oldest_booted()
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass  # it exited by itself; the next poll picks another
                else:
                    pending.pop(0)
                    result.kills.append(Kill(at=elapsed, pid=pid))
                    say(f"{elapsed:5.1f}s SIGTERM worker {pid}")
        time.sleep(0.1)
    if time.monotonic() >= deadline:
        result.errors.append("the clients did not finish in time")


def _add_client_results(result: SoakResult, outputs: list[dict[str, Any]]) -> None:
    statuses: collections.Counter[int] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    latencies = array.array("d")
    for out in outputs:
        result.sent += out["sent"]
        result.duration = max(result.duration, out["elapsed"])
        statuses.update(out["statuses"])
        errors.update(out["errors"])
        latencies.frombytes(out["latencies"])
    answered = array.array("q")
    for out in outputs:
        answered.frombytes(out["answered"])
    result.answered = len(answered)
    result.statuses = dict(statuses)
    result.client_errors = dict(errors)
    if latencies:
        ordered = sorted(latencies)
        result.latency_ms = {
            "p50": 1000 * ordered[len(ordered) // 2],
            "p99": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "max": 1000 * ordered[-1],
        }
    result.answered_markers = set(answered)


def _settle(receiver: SegmentReceiver, config: SoakConfig, result: SoakResult) -> None:
    """Wait until every request the receiver has seen is answered (a stall may still run)."""
    try:
        receiver.wait_answered(timeout=config.stall_seconds + 15)
    except AssertionError as exc:
        result.errors.append(str(exc))


def _store_rows(store: Path) -> dict[str, int]:
    """The store's rows by kind and state, read-only: what went to disk during the run.

    A diagnostic, not an assertion: the table is the package's own business, so this only
    reads it when it looks as expected (``kind``/``state`` columns) and is empty
    otherwise. It is the one place that can show that the queue overflowed to disk when
    nothing was left there at exit (deferred rows drained by the sender).
    """
    if not store.exists():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)) as db:
            rows = db.execute(
                "SELECT kind, state = 'waiting', COUNT(*) FROM events GROUP BY kind, state = 'waiting'"
            ).fetchall()
    except sqlite3.Error:
        return {}
    return {f"{kind} {'pending' if pending else 'sent/claimed'}": count for kind, pending, count in rows}


def _stored_ids(store: Path) -> set[str]:
    """The messageIds that went through the store (deferred or spooled), read-only."""
    if not store.exists():
        return set()
    try:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)) as db:
            rows = db.execute("SELECT message_id FROM events WHERE kind IN ('deferred', 'spool')").fetchall()
    except sqlite3.Error:
        return set()
    return {row[0] for row in rows}


def _replay(receiver: SegmentReceiver, store: Path, result: SoakResult) -> None:
    # Not the Django settings other test modules name for this process: the replay reads
    # the environment, as an operator's would on a machine with no project.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SEGMENT_") and key != "DJANGO_SETTINGS_MODULE"
    }
    env["SEGMENT_LOCAL_STORE"] = str(store)
    argv = [str(BIN / "segment-middleware"), "replay", "--write-key", WRITE_KEY, "--host", receiver.url]
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        result.errors.append("segment-middleware replay did not finish in 300 s")
        return
    result.replay_exit = proc.returncode
    result.replay_output = (proc.stdout + proc.stderr)[-2000:]
    match = REPLAY_SENT.search(proc.stdout)
    result.replay_sent = int(match.group(1)) if match else None


def marker_of(message: dict[str, Any]) -> int | None:
    """The ``n`` of the request a page call was made for, from ``properties.search`` (or ``url``)."""
    properties = message.get("properties") or {}
    for query in (
        str(properties.get("search") or "").lstrip("?"),
        urlsplit(str(properties.get("url") or "")).query,
    ):
        values = parse_qs(query).get("n")
        if values and values[0].isdigit():
            return int(values[0])
    return None


def _count_received(receiver: SegmentReceiver, live: int, result: SoakResult, through_disk: set[str]) -> None:
    """Received copies by messageId. Two copies are explainable when one came from the
    replay, or when the message went through the store: a batch cut off at a worker's
    shutdown (in flight, or its deferred rows handed over while being sent) that landed
    and was then sent again from disk by the next process."""
    messages = receiver.messages
    result.received_messages = len(messages)
    result.live_messages = live
    result.replayed_messages = len(messages) - live
    copies: dict[str, list[int]] = {}  # messageId -> [live copies, replayed copies]
    ids_by_marker: dict[int, set[str]] = {}
    for position, message in enumerate(messages):
        # A message without a string messageId (the package never sends one) is still a page
        # call received; it is only left out of the duplicate count, having nothing to match.
        message_id = message.get("messageId")
        if isinstance(message_id, str):
            copies.setdefault(message_id, [0, 0])[0 if position < live else 1] += 1
        if message.get("type") == "page":
            marker = marker_of(message)
            if marker is not None:
                ids_by_marker.setdefault(marker, set()).add(str(message_id))
    answered = result.answered_markers
    result.received_pages = len(ids_by_marker)
    result.lost = sorted(answered - set(ids_by_marker))
    result.received_unanswered = len(set(ids_by_marker) - answered)
    result.tracked_twice = sorted(marker for marker, ids in ids_by_marker.items() if len(ids) > 1)
    for message_id, (live_copies, replayed_copies) in copies.items():
        if live_copies + replayed_copies <= 1:
            continue
        if live_copies + replayed_copies == 2 and (replayed_copies == 1 or message_id in through_disk):
            result.explainable_duplicates += 1
        else:
            result.unexplained_duplicates[message_id] = live_copies + replayed_copies


def _read_log(path: Path, result: SoakResult) -> None:
    """The stats-at-exit lines (the last one per pid), the drop and spool lines, tracebacks."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        result.errors.append(f"server log unreadable: {exc}")
        return
    drops: collections.Counter[str] = collections.Counter()
    spools: collections.Counter[str] = collections.Counter()
    others: collections.Counter[str] = collections.Counter()
    unknown: list[str] = []
    for line in text.splitlines():
        if match := STATS_LINE.search(line):
            try:
                stats = json.loads(match.group(2))
            except ValueError:
                result.errors.append(f"unreadable stats line: {line[:200]}")
                continue
            result.stats[int(match.group(1))] = stats
        elif match := DROP_LINE.search(line):
            drops[match.group(2)] += int(match.group(1))
        elif match := SPOOL_LINE.search(line):
            spools[match.group(2)] += int(match.group(1))
        elif match := DEFER_LINE.search(line):
            result.deferred_logged += int(match.group(1))
        elif match := UNKNOWN_SETTING.search(line):
            if match.group(1) not in unknown:
                unknown.append(match.group(1))
        elif match := PACKAGE_LINE.search(line):
            others[f"{match.group(1)} {re.sub(r'[0-9]+', 'N', match.group(2))[:160]}"] += 1
        elif line.startswith("Traceback (most recent call last)"):
            result.tracebacks += 1
    result.drop_lines = dict(drops)
    result.spool_lines = dict(spools)
    result.log_lines = dict(others.most_common())
    result.unknown_settings = unknown
