"""What SegmentMiddleware costs a Django app, against no middleware and the official SDK.

Why this benchmark looks the way it does:

1. **In-process handler time** (no server, no sockets): the WSGIHandler is called directly
   with a realistic browser environ, for three stacks (bare / ours / a naive middleware that
   calls the SDK's ``page()`` inline) in interleaved, rotated rounds so that drift (CPU
   frequency, caches, other processes) hits all stacks alike. The sender threads run during
   the rounds and really deliver to a Segment-compatible receiver, because their GIL time is
   part of what a request-serving process pays.
2. **Total CPU per delivered message**: ``time.process_time()`` (all threads) from the first
   request until the receiver has every message, minus the bare app's CPU for the same
   requests. The receiver runs in its own process, so only the client side is counted.
3. **A real server**: gunicorn (sync worker, 1 worker) serving the same app, driven with a
   fixed number of requests over 127.0.0.1; latency percentiles, then SIGTERM and an exact
   count of what arrived (one page call per request).

4. **Flask and Starlette in process**: part 1's method for a bare / ours / naive Flask app
   (``flaskbench``, the WSGI app called directly) and Starlette app (``asgibench``, awaited
   on one event loop), each framework in its own child; the receivers count messages by
   type and messageId, so "one page call per request" is checked exactly.

Parts 1, 2 and 4 run in fresh child interpreters (``--child``), with their own receiver
processes, so one part's threads, caches and counters cannot leak into another's figures.

Run: ``python bench/overhead.py [--quick] [--json PATH] [--strict] [--rounds N]``. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import functools
import gc
import http.client
import importlib.metadata
import io
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's receiver (segment_receiver)
RECEIVER_SCRIPT = str(ROOT / "tests" / "segment_receiver.py")

import djbench  # noqa: E402

BIN = Path(sys.executable).parent
WRITE_KEY = djbench.WRITE_KEY

RATIO_BAR = 8.0  # naive overhead / ours overhead, in process (CPU per request, all threads)
RATIO_AIM = 10.0
CPU_BAR = 0.5  # ours CPU per message / SDK CPU per message


# ---------------------------------------------------------------------- sizes
def sizes(quick: bool, rounds: int | None = None) -> dict[str, Any]:
    """Run sizes and the hard time limits that bound every loop; ``rounds`` (``--rounds``)
    sets the in-process parts' rounds per stack, still within each part's time limit."""
    cfg = _sizes(quick)
    if rounds is not None:
        cfg["rounds"] = cfg["fw_rounds"] = rounds
    return cfg


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "rounds": 5,
            "per_round": 300,
            "warmup": 200,
            "auth_variants": True,
            "cpu_messages": 3000,
            "cpu_chunk": 1000,
            "http_requests": 300,
            "http_chunk": 50,
            "http_limit_s": 60.0,
            "part_limit_s": 150.0,
            "fw_rounds": 5,
            "fw_per_round": 300,
            "fw_warmup": 200,
        }
    return {
        "rounds": 7,
        "per_round": 2000,
        "warmup": 500,
        "auth_variants": True,
        "cpu_messages": 20000,
        "cpu_chunk": 5000,
        "http_requests": 3000,
        "http_chunk": 100,
        "http_limit_s": 60.0,
        "part_limit_s": 400.0,
        "fw_rounds": 9,
        "fw_per_round": 3000,
        "fw_warmup": 500,
    }


# ---------------------------------------------------------------------- small helpers
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


pct = djbench.pct


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


sdk_flush = djbench.sdk_flush


#: Which receiver the benchmarks post to. Default ("raw"): ``bench/rawreceiver.py``, which
#: keeps the bodies and decodes them after the run; the package's test receiver decodes and
#: validates every batch as it arrives (~38 µs of CPU per message), CPU that the measured
#: process's two cores would lose to the harness. "full": that test receiver, with
#: TCP_NODELAY (its two send()s per answer would otherwise wait ~40 ms for a delayed ACK);
#: "stock": the test receiver exactly as shipped.
RECEIVER_KIND = "raw"
NODELAY_RECEIVER = (
    f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import segment_receiver as t; "
    "t._Handler.disable_nagle_algorithm = True; sys.exit(t.main())"
)


#: The same receiver, printing one more JSON line at exit: the messages by type, distinct
#: messageIds and distinct ``context.page.path`` values, so that "one page call per
#: request" is checked exactly (part 4).
DETAIL_RECEIVER = (
    "import sys, json, collections\n"
    f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
    "import segment_receiver as t\n"
    "t._Handler.disable_nagle_algorithm = {nodelay}\n"
    "_stop = t.SegmentReceiver.stop\n"
    "def stop(self):\n"
    "    _stop(self)\n"
    "    msgs = self.messages\n"
    "    pages = ((m.get('context') or {{}}).get('page') or {{}} for m in msgs)\n"
    "    paths = collections.Counter(page.get('path') for page in pages)\n"
    "    print(json.dumps({{'types': dict(collections.Counter(m.get('type') for m in msgs)),\n"
    "        'message_ids': len({{m.get('messageId') for m in msgs}}), 'paths': dict(paths)}}), flush=True)\n"
    "t.SegmentReceiver.stop = stop\n"
    "sys.exit(t.main())\n"
)


class Receiver:
    """The package's Segment-compatible receiver in its own process (so its CPU is not ours)."""

    def __init__(self, max_seconds: float, detail: bool = False, launch: Sequence[str] | None = None) -> None:
        """``launch``: the interpreter arguments that start the receiver, replacing the pick
        by RECEIVER_KIND (``tail.py`` starts ``rawreceiver`` with a live count this way)."""
        if launch is not None:
            launch = list(launch)
        elif RECEIVER_KIND == "raw":
            launch = [str(HERE / "rawreceiver.py"), *(["--detail"] if detail else [])]
        elif detail:
            launch = ["-c", DETAIL_RECEIVER.format(nodelay=RECEIVER_KIND == "full")]
        elif RECEIVER_KIND == "stock":
            launch = [RECEIVER_SCRIPT]
        else:
            launch = ["-c", NODELAY_RECEIVER]
        argv = [
            sys.executable,
            *launch,
            "--port",
            "0",
            "--write-key",
            WRITE_KEY,
            "--max-seconds",
            str(int(max_seconds)),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 15.0)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"receiver did not start (got {line!r})")
        self.url = line.split("listening on ", 1)[1].strip()

    def stop(self) -> dict[str, Any]:
        """SIGTERM; returns the receiver's summary ``{"requests": N, "messages": M}`` (plus
        ``types``, ``message_ids`` and ``paths`` from a ``detail`` receiver)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=5)
        summary: dict[str, Any] = {}
        for line in out.splitlines():
            if line.startswith("{"):
                summary.update(json.loads(line))
        return summary if "messages" in summary else {"requests": -1, "messages": -1}


def callers(stacks: Sequence[str]) -> dict[str, Callable[[], int]]:
    """One request function per stack, each with its own WSGIHandler and middleware chain."""
    env = djbench.environ()
    return {s: djbench.make_caller(djbench.build_handler(djbench.STACKS[s]), env) for s in stacks}


# ---------------------------------------------------------------------- part 1 (child)
def child_inproc(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds of in-process requests; per stack the median of round means."""
    import segment_middleware

    cfg = sizes(args.quick, args.rounds)
    djbench.configure(
        {"WRITE_KEY": WRITE_KEY, "HOST": args.ours_url, "LOCAL_STORE": args.store}, naive_host=args.sdk_url
    )
    groups = [["bare", "ours", "naive"]]
    if cfg["auth_variants"]:
        groups.append(["bare+auth", "ours+auth", "naive+auth"])
    sent = {"ours": 0, "naive": 0}
    out: dict[str, Any] = {"stacks": {}, "rounds": cfg["rounds"], "per_round": cfg["per_round"]}
    deadline = time.monotonic() + cfg["part_limit_s"] * 0.8

    def settle(stack: str) -> None:
        if stack.startswith("ours"):
            if not segment_middleware.flush(30):
                raise RuntimeError("segment_middleware.flush(30) timed out")
        elif stack.startswith("naive") and not sdk_flush(djbench.naive_client(), 30):
            raise RuntimeError("SDK flush timed out")

    for group in groups:
        calls = callers(group)
        for stack in group:
            djbench.run_requests(calls[stack], cfg["warmup"])
            settle(stack)
            sent[stack.split("+")[0]] = sent.get(stack.split("+")[0], 0) + cfg["warmup"]
        rounds: dict[str, list[djbench.RoundTime]] = {s: [] for s in group}
        singles: dict[str, list[int]] = {s: [] for s in group}
        n = cfg["per_round"]
        for r in range(cfg["rounds"]):
            if time.monotonic() > deadline:
                log(f"  time limit reached after {r} rounds")
                break
            order = group[r % len(group) :] + group[: r % len(group)]
            for stack in order:
                # The round pays for delivering its messages: the flush's CPU is added.
                deliver = functools.partial(settle, stack)
                rounds[stack].append(djbench.timed_round(calls[stack], n, singles[stack], stack, deliver))
                sent[stack.split("+")[0]] = sent.get(stack.split("+")[0], 0) + n
        for stack in group:
            out["stacks"][stack] = djbench.summarize_stack(rounds[stack], singles[stack])
    if time.monotonic() < deadline:
        alone = middleware_alone(cfg, settle, deadline)
        out["middleware_alone"] = alone
        for stack in ("ours", "naive"):
            sent[stack] += alone["sent"]
    out["sent"] = {"ours": sent["ours"], "naive": sent["naive"]}
    out["ours_stats"] = segment_middleware.stats()
    out["sdk_errors"] = djbench.sdk_errors[0]
    return out


def middleware_alone(cfg: dict[str, Any], settle: Callable[[str], None], deadline: float) -> dict[str, Any]:
    """Each middleware called on its own around a view that returns a prebuilt response:
    the request-path cost without Django's handler, URL resolving and response plumbing
    (requests are built before the timed loop). Delivery is real for both."""
    from django.core.handlers.wsgi import WSGIRequest
    from django.http import HttpResponse

    from segment_middleware.django import SegmentMiddleware

    response = HttpResponse(b"hello world", content_type="text/plain")

    def view(request: Any) -> Any:
        return response

    stacks: dict[str, Callable[[Any], Any]] = {
        "view": view,
        "ours": SegmentMiddleware(view),
        "naive": djbench.NaiveSegmentMiddleware(view),
    }
    env = djbench.environ()
    n = cfg["per_round"]

    def fresh() -> list[Any]:
        out = []
        for _ in range(n):
            e = env.copy()
            e["wsgi.input"] = io.BytesIO(b"")
            out.append(WSGIRequest(e))
        return out

    names = list(stacks)
    singles: dict[str, list[int]] = {s: [] for s in names}
    means: dict[str, list[float]] = {s: [] for s in names}
    sent = 0
    pc = time.perf_counter_ns
    for r in range(cfg["rounds"] + 1):  # round 0 is warm-up
        if time.monotonic() > deadline:
            break
        for name in names[r % 3 :] + names[: r % 3]:
            requests, f, times = fresh(), stacks[name], singles[name]
            gc.collect()
            start = pc()
            for request in requests:
                t0 = pc()
                f(request)
                times.append(pc() - t0)
            elapsed = pc() - start + djbench.delivery_cpu_ns(functools.partial(settle, name))
            if r > 0:
                means[name].append(elapsed / n / 1000)
            else:
                times.clear()
        sent += n
    return {
        name: {
            "median_round_mean_us": statistics.median(means[name]) if means[name] else float("nan"),
            "p50_us": pct(singles[name], 50) / 1000,
            "p99_us": pct(singles[name], 99) / 1000,
        }
        for name in names
    } | {"sent": sent}


# ---------------------------------------------------------------------- part 2 (child)
def child_cpu(args: argparse.Namespace) -> dict[str, Any]:
    """Process CPU (all threads) from first request to everything delivered, per stack."""
    import segment_middleware

    cfg = sizes(args.quick, args.rounds)
    djbench.configure(
        {"WRITE_KEY": WRITE_KEY, "HOST": args.ours_url, "LOCAL_STORE": args.store}, naive_host=args.sdk_url
    )
    stacks = ["bare", "ours", "naive"]
    calls = callers(stacks)
    client = djbench.naive_client()

    def settle(stack: str) -> None:
        if stack == "ours" and not segment_middleware.flush(60):
            raise RuntimeError("segment_middleware.flush(60) timed out")
        if stack == "naive" and not sdk_flush(client, 60):
            raise RuntimeError("SDK flush timed out")

    warmup = cfg["warmup"]
    for stack in stacks:
        djbench.run_requests(calls[stack], warmup)
        settle(stack)
    total, chunk = cfg["cpu_messages"], cfg["cpu_chunk"]
    cpu = dict.fromkeys(stacks, 0.0)
    main_cpu = dict.fromkeys(stacks, 0.0)
    done = dict.fromkeys(stacks, 0)
    deadline = time.monotonic() + cfg["part_limit_s"] * 0.8
    i = 0
    while min(done.values()) < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"time limit reached with {done} requests done")
        order = stacks[i % 3 :] + stacks[: i % 3]
        i += 1
        for stack in order:
            n = min(chunk, total - done[stack])
            gc.collect()
            c0, t0 = time.process_time(), time.thread_time()
            djbench.run_requests(calls[stack], n)
            t1 = time.thread_time()  # the request thread's share, before waiting for delivery
            settle(stack)
            cpu[stack] += time.process_time() - c0
            main_cpu[stack] += t1 - t0
            done[stack] += n
    per = {s: cpu[s] / total * 1e6 for s in stacks}
    per_main = {s: main_cpu[s] / total * 1e6 for s in stacks}
    return {
        "messages": total,
        "cpu_us_per_request": per,
        "request_thread_cpu_us_per_request": per_main,
        "ours_added_us": per["ours"] - per["bare"],
        "sdk_added_us": per["naive"] - per["bare"],
        "sent": {"ours": warmup + total, "naive": warmup + total},
        "ours_stats": segment_middleware.stats(),
        "sdk_errors": djbench.sdk_errors[0],
    }


# ---------------------------------------------------------------------- part 4 (child)
FRAMEWORKS = ("flask", "starlette")


def child_framework(args: argparse.Namespace) -> dict[str, Any]:
    """Flask (flaskbench) or Starlette (asgibench): bare / ours / naive, interleaved rounds."""
    cfg = sizes(args.quick, args.rounds)
    if args.child == "flask":
        import flaskbench as bench
    else:
        import asgibench as bench  # type: ignore[no-redef]
    return bench.measure(cfg, args.ours_url, args.sdk_url, args.store, log)


def framework_delivered_ok(result: dict[str, Any], stack: str) -> bool:
    """Exactly one page call per request: count, types, distinct messageIds and the path."""
    got, sent = result["received"][stack], result["sent"][stack]
    return (
        got.get("messages") == sent
        and got.get("types") == {"page": sent}
        and got.get("message_ids") == sent
        and got.get("paths") == {djbench.PAGE_PATH: sent}
    )


def run_frameworks(args: argparse.Namespace) -> dict[str, Any]:
    """Part 4: each framework in its own child; a crashed child is reported, not fatal."""
    out: dict[str, Any] = {}
    for kind in FRAMEWORKS:
        try:
            out[kind] = run_child(kind, args)
        except Exception as exc:  # the Django figures above stay useful; report() flags it
            log(f"  {kind}: {type(exc).__name__}: {exc}")
            out[kind] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# ---------------------------------------------------------------------- parent: run a child
def run_child(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """A part in a fresh interpreter, with its own two receivers; checks what arrived."""
    cfg = sizes(args.quick, args.rounds)
    detail = kind in FRAMEWORKS
    ours_rx = Receiver(cfg["part_limit_s"] + 60, detail)
    sdk_rx = Receiver(cfg["part_limit_s"] + 60, detail)
    store = os.path.join(tempfile.mkdtemp(prefix="segment-bench-"), "events.sqlite3")
    argv = [sys.executable, __file__, "--child", kind, "--ours-url", ours_rx.url, "--sdk-url", sdk_rx.url]
    argv += ["--store", store] + (["--quick"] if args.quick else [])
    argv += ["--rounds", str(args.rounds)] if args.rounds is not None else []
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=cfg["part_limit_s"], cwd=ROOT)
    finally:
        ours_summary, sdk_summary = ours_rx.stop(), sdk_rx.stop()
        shutil.rmtree(os.path.dirname(store), ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["received"] = {"ours": ours_summary, "naive": sdk_summary}
    result["delivered_ok"] = {
        "ours": ours_summary["messages"] == result["sent"]["ours"],
        "naive": sdk_summary["messages"] == result["sent"]["naive"],
    }
    if detail:
        result["delivered_ok"] = {s: framework_delivered_ok(result, s) for s in ("ours", "naive")}
    return result


# ---------------------------------------------------------------------- part 3: gunicorn
class Gunicorn:
    """One gunicorn (sync worker, 1 worker unless told) serving djbench with one stack."""

    def __init__(
        self, stack: str, host: str | None, logdir: str, workers: int = 1, app: str = "djbench:wsgi_app()"
    ) -> None:
        self.stack = stack
        self.port = free_port()
        env = {**os.environ, "BENCH_STACK": stack, "PYTHONUNBUFFERED": "1"}
        env.pop("BENCH_HOST", None)
        if host:
            env["BENCH_HOST"] = host
        env["BENCH_LOCAL_STORE"] = os.path.join(logdir, f"{stack}.sqlite3")
        argv = [
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            "--graceful-timeout",
            "20",
            "--log-level",
            "warning",
            "--chdir",
            str(HERE),
            app,
        ]
        self.log_path = os.path.join(logdir, f"gunicorn-{stack}.log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn {self.stack} exited early; see {self.log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", djbench.HEALTH_PATH, headers={"Host": "127.0.0.1"})
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn {self.stack} not ready after {timeout}s; see {self.log_path}")

    def get(self) -> int:
        """One tracked GET. The sync worker answers ``Connection: close``; http.client then
        reconnects on the next request, so every request pays a TCP connect (same for all)."""
        self.conn.request("GET", f"{djbench.PAGE_PATH}?{djbench.QUERY}", headers=djbench.HEADERS)
        resp = self.conn.getresponse()
        resp.read()
        return resp.status

    def stop(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM and wait (bounded); returns (exit code, seconds it took to exit)."""
        self.conn.close()
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode, time.monotonic() - start


def run_gunicorn(args: argparse.Namespace) -> dict[str, Any]:
    """bare / ours / naive under gunicorn, requests interleaved in chunks, bounded in time."""
    cfg = sizes(args.quick, args.rounds)
    logdir = tempfile.mkdtemp(prefix="segment-bench-gunicorn-")
    receivers = {"ours": Receiver(cfg["http_limit_s"] + 120), "naive": Receiver(cfg["http_limit_s"] + 120)}
    servers: dict[str, Gunicorn] = {}
    try:
        for stack in ("bare", "ours", "naive"):
            rx = receivers.get(stack)
            servers[stack] = Gunicorn(stack, rx.url if rx else None, logdir)
        for server in servers.values():
            server.wait_ready()
        warmup = 50
        for server in servers.values():
            for _ in range(warmup):
                if server.get() != 200:
                    raise RuntimeError(f"gunicorn {server.stack}: non-200 answer")
        lat: dict[str, list[int]] = {s: [] for s in servers}
        total, chunk = cfg["http_requests"], cfg["http_chunk"]
        names = list(servers)
        deadline = time.monotonic() + cfg["http_limit_s"]
        i = 0
        timed_out = False
        pc = time.perf_counter_ns
        while min(len(v) for v in lat.values()) < total and not timed_out:
            order = names[i % 3 :] + names[: i % 3]
            i += 1
            for stack in order:
                server, times = servers[stack], lat[stack]
                for _ in range(min(chunk, total - len(times))):
                    t0 = pc()
                    status = server.get()
                    times.append(pc() - t0)
                    if status != 200:
                        raise RuntimeError(f"gunicorn {stack}: status {status}")
                if time.monotonic() > deadline:
                    timed_out = True
                    break
    finally:
        exits = {s: server.stop() for s, server in servers.items()}
        summaries = {s: rx.stop() for s, rx in receivers.items()}
    shutil.rmtree(logdir, ignore_errors=True)  # kept when something raised: the logs are there
    out: dict[str, Any] = {"timed_out": timed_out, "stacks": {}, "exit": {}}
    for stack, times in lat.items():
        out["stacks"][stack] = {
            "requests": len(times),
            "p50_us": pct(times, 50) / 1000,
            "p90_us": pct(times, 90) / 1000,
            "p99_us": pct(times, 99) / 1000,
            "mean_us": statistics.fmean(times) / 1000,
        }
        out["exit"][stack] = {"code": exits[stack][0], "seconds": round(exits[stack][1], 2)}
    out["received"] = summaries
    out["sent"] = {s: warmup + len(lat[s]) for s in receivers}
    out["delivered_ok"] = {s: summaries[s]["messages"] == out["sent"][s] for s in receivers}
    return out


# ---------------------------------------------------------------------- report
def report(results: dict[str, Any]) -> list[str]:
    """Print every figure, then the summary table; returns the failed bars/checks."""
    failures: list[str] = []
    p1, p2, p3 = results["inproc"], results["cpu"], results["gunicorn"]

    print("\n== 1. in-process Django handler (WSGIHandler called directly) ==")
    print(f"   {p1['rounds']} interleaved rounds x {p1['per_round']} requests per stack; figure = median")
    print("   over rounds of the round's mean time per request (+ the CPU of the flush delivering its rest);")
    print("   p50/p99 are over all single requests. gc enabled for all stacks, collected between rounds.")
    s = p1["stacks"]
    print("   cpu µs: the same rounds' process CPU (all threads: the sender or the SDK's consumer too).")
    print(f"   {'stack':<12}{'median µs':>11}{'cpu µs':>9}{'p50':>9}{'p90':>9}{'p99':>9}   rounds (µs)")
    for name, v in s.items():
        rounds = " ".join(f"{x:.0f}" for x in v["round_means_us"])
        print(
            f"   {name:<12}{v['median_round_mean_us']:>11.1f}{v['median_round_cpu_us']:>9.1f}"
            f"{v['p50_us']:>9.1f}{v['p90_us']:>9.1f}{v['p99_us']:>9.1f}   {rounds}"
        )
    if "middleware_alone" in p1:
        a = p1["middleware_alone"]
        print("   middleware alone (called around a view returning a prebuilt response; no handler):")
        for name in ("view", "ours", "naive"):
            print(
                f"   {name:<12}{a[name]['median_round_mean_us']:>11.1f}{a[name]['p50_us']:>9.1f}"
                f"{'':>9}{a[name]['p99_us']:>9.1f}"
            )
    print(
        f"   receiver got: ours {p1['received']['ours']['messages']}/{p1['sent']['ours']}, "
        f"naive {p1['received']['naive']['messages']}/{p1['sent']['naive']}; "
        f"ours stats {p1['ours_stats']}; SDK errors {p1['sdk_errors']}"
    )

    print("\n== 2. total CPU per delivered message ==")
    print("   process_time (all threads) until the receiver (own process) has everything, minus bare")
    c = p2["cpu_us_per_request"]
    m = p2["request_thread_cpu_us_per_request"]
    print(f"   {p2['messages']} requests per stack, delivered and flushed, interleaved in chunks")
    for name in ("bare", "ours", "naive"):
        print(
            f"   {name:<6} {c[name]:8.1f} µs CPU/request   (request thread {m[name]:6.1f}, "
            f"other threads {c[name] - m[name]:6.1f})"
        )
    print(
        f"   receiver got: ours {p2['received']['ours']['messages']}/{p2['sent']['ours']}, "
        f"sdk {p2['received']['naive']['messages']}/{p2['sent']['naive']}; ours stats {p2['ours_stats']}"
    )

    print("\n== 3. gunicorn, sync worker, 1 worker, 127.0.0.1 (new TCP connection per request) ==")
    g = p3["stacks"]
    for name, v in g.items():
        print(
            f"   {name:<6} n={v['requests']:<5} p50 {v['p50_us']:7.0f} µs  p90 {v['p90_us']:7.0f}  "
            f"p99 {v['p99_us']:7.0f}  mean {v['mean_us']:7.0f}   exit {p3['exit'][name]}"
        )
    print(
        f"   receiver after SIGTERM: ours {p3['received']['ours']['messages']}/{p3['sent']['ours']} "
        f"(requests {p3['received']['ours']['requests']}), naive SDK "
        f"{p3['received']['naive']['messages']}/{p3['sent']['naive']}"
        + ("   [TIME LIMIT HIT]" if p3["timed_out"] else "")
    )

    fw = results.get("frameworks", {})
    if fw:
        print("\n== 4. in-process Flask and Starlette (each in its own child interpreter) ==")
        print("   Flask: the WSGI app called like djbench's handler; Starlette: `await app(scope, receive,")
        print("   send)` on one event loop, scopes prebuilt. Same browser request, same method as part 1.")
    for kind, r in fw.items():
        if "error" in r:
            print(f"   {kind}: FAILED: {r['error']}")
            continue
        print(f"   {kind}: {r['rounds']} interleaved rounds x {r['per_round']} requests per stack")
        print(f"   {'stack':<12}{'median µs':>11}{'cpu µs':>9}{'p50':>9}{'p90':>9}{'p99':>9}   rounds (µs)")
        for name, v in r["stacks"].items():
            rounds = " ".join(f"{x:.1f}" for x in v["round_means_us"])
            print(
                f"   {name:<12}{v['median_round_mean_us']:>11.1f}{v['median_round_cpu_us']:>9.1f}"
                f"{v['p50_us']:>9.1f}{v['p90_us']:>9.1f}{v['p99_us']:>9.1f}   {rounds}"
            )
        rx = r["received"]
        print(
            f"   receiver got: ours {rx['ours']['messages']}/{r['sent']['ours']} {rx['ours'].get('types')}, "
            f"naive {rx['naive']['messages']}/{r['sent']['naive']} {rx['naive'].get('types')}; "
            f"ours stats {r['ours_stats']}; SDK errors {r['sdk_errors']}"
        )

    # ---- summary table
    summary = summarize(results)
    results["summary"] = summary
    print("\n== summary ==")
    print(
        f"CPU per request, all threads, delivery included (the bar: naive/ours overhead >= {RATIO_BAR:.0f}x, "
        f"aim {RATIO_AIM:.0f}x); then the same rounds' wall time, which also holds the other process's "
        "(receiver's) competition for the two cores and the GIL hand-off gaps"
    )
    t, v = summary["throughput"], summary["request_p50"]
    print(cpu_line("django", summary["cpu_rounds"]))
    print(
        f"  same rounds, wall: bare {t['bare']:.1f} µs   ours {t['ours']:.1f} µs "
        f"({t['ours_overhead']:+.1f})   naive {t['naive']:.1f} µs ({t['naive_overhead']:+.1f})   "
        f"naive/ours overhead {t['ratio']:.1f}x  [{verdict(t['pass'])}]"
    )
    print(
        f"  same, single-request p50 (request path; sender bursts land in the tail): bare {v['bare']:.1f}  "
        f"ours {v['ours']:.1f} ({v['ours_overhead']:+.1f})  naive {v['naive']:.1f} "
        f"({v['naive_overhead']:+.1f})  ratio {v['ratio']:.1f}x  [{verdict(v['pass'])}]"
    )
    if "alone" in summary:
        m = summary["alone"]
        means = f"(round means: ours {m['ours_mean']:.1f}, naive {m['naive_mean']:.1f})"
        print(
            f"  middleware alone, p50: ours {m['ours_overhead']:.1f} µs   "
            f"naive {m['naive_overhead']:.1f} µs   ratio {m['ratio']:.1f}x   {means}"
        )
    if "auth" in summary:
        a = summary["auth"]
        print(
            f"  with sessions+auth, CPU: bare {a['bare']:.1f}  ours {a['ours']:.1f} "
            f"({a['ours_overhead']:+.1f})  naive {a['naive']:.1f} ({a['naive_overhead']:+.1f})  "
            f"ratio {a['ratio']:.1f}x"
            "   (OpenTelemetry's WSGI middleware, for scale: ~250 µs)"
        )
    c = summary["cpu"]
    print(
        f"cpu per delivered message   ours {c['ours']:.1f} µs   sdk page() {c['sdk']:.1f} µs   ratio "
        f"{c['ratio']:.2f}  [bar <= {CPU_BAR}: {verdict(c['pass'])}]"
    )
    h = summary["gunicorn"]
    print(
        f"gunicorn sync 1 worker   bare p50 {h['bare_p50']:.0f} µs p99 {h['bare_p99']:.0f}   ours p50 "
        f"{h['ours_p50']:.0f} p99 {h['ours_p99']:.0f} ({h['ours_p50'] - h['bare_p50']:+.0f} µs, ratio "
        f"{h['p50_ratio']:.3f}; p99 ratio {h['p99_ratio']:.2f})   naive p50 {h['naive_p50']:.0f} "
        f"p99 {h['naive_p99']:.0f} ({h['naive_p50'] - h['bare_p50']:+.0f} µs)"
    )
    for kind in fw:
        if kind not in summary:
            print(f"{kind:<9} in-process   FAILED: {fw[kind]['error']}")
            failures.append(f"delivery: {kind} part crashed")
            continue
        fc, ft, fp = summary[kind]["cpu"], summary[kind]["throughput"], summary[kind]["request_p50"]
        print(cpu_line(kind, fc))
        print(
            f"  same rounds, wall: bare {ft['bare']:.1f} µs   ours {ft['ours']:.1f} µs "
            f"({ft['ours_overhead']:+.1f})   naive {ft['naive']:.1f} µs ({ft['naive_overhead']:+.1f})   "
            f"naive/ours overhead {ft['ratio']:.1f}x  [{verdict(ft['pass'])}]"
        )
        print(
            f"  same, single-request p50: bare {fp['bare']:.1f}  ours {fp['ours']:.1f} "
            f"({fp['ours_overhead']:+.1f})  naive {fp['naive']:.1f} ({fp['naive_overhead']:+.1f})  "
            f"ratio {fp['ratio']:.1f}x  [{verdict(fp['pass'])}]"
        )
        if not fc["pass"]:
            failures.append(f"{kind} CPU overhead ratio {fc['ratio']:.1f}x < {RATIO_BAR}x")
    if not summary["cpu_rounds"]["pass"]:
        failures.append(f"django CPU overhead ratio {summary['cpu_rounds']['ratio']:.1f}x < {RATIO_BAR}x")
    if not c["pass"]:
        failures.append(f"CPU ratio {c['ratio']:.2f} > {CPU_BAR}")
    checks = [
        ("in-process ours", p1["delivered_ok"]["ours"]),
        ("in-process naive", p1["delivered_ok"]["naive"]),
        ("cpu ours", p2["delivered_ok"]["ours"]),
        ("cpu sdk", p2["delivered_ok"]["naive"]),
        ("gunicorn ours (one page per request after SIGTERM)", p3["delivered_ok"]["ours"]),
    ]
    for kind, r in fw.items():
        if "delivered_ok" in r:
            checks += [(f"{kind} {stack}", r["delivered_ok"][stack]) for stack in ("ours", "naive")]
    line = "   ".join(f"{name}: {'ok' if ok else 'MISMATCH'}" for name, ok in checks)
    print(f"delivery checks   {line}")
    if not p3["delivered_ok"]["naive"]:
        print(
            f"   note: the naive SDK server lost {p3['sent']['naive'] - p3['received']['naive']['messages']}"
            " message(s) at SIGTERM (its exit hook does not drain the queue)"
        )
    failures += [f"delivery mismatch: {name}" for name, ok in checks if not ok]
    return failures


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def cpu_line(kind: str, c: dict[str, Any]) -> str:
    """The headline: CPU per request that each middleware adds, and their ratio."""
    aim = " (aim met)" if c["ratio"] >= RATIO_AIM else ""
    return (
        f"{kind:<9} in-process CPU   bare {c['bare']:.1f} µs   ours {c['ours']:.1f} µs "
        f"({c['ours_overhead']:+.1f})   naive {c['naive']:.1f} µs ({c['naive_overhead']:+.1f})   "
        f"naive/ours overhead {c['ratio']:.1f}x  [bar >= {RATIO_BAR:.0f}x: {verdict(c['pass'])}{aim}]"
    )


def _overheads(stacks: dict[str, Any], names: Sequence[str], key: str) -> dict[str, Any]:
    bare, ours, naive = (stacks[n][key] for n in names)
    o_ov, n_ov = ours - bare, naive - bare
    ratio = n_ov / o_ov if o_ov > 0 else float("inf")
    return {
        "bare": bare,
        "ours": ours,
        "naive": naive,
        "ours_overhead": o_ov,
        "naive_overhead": n_ov,
        "ratio": ratio,
        "pass": ratio >= RATIO_BAR,
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures and their bars (also written to the JSON)."""
    s = results["inproc"]["stacks"]
    out: dict[str, Any] = {
        "cpu_rounds": _overheads(s, ("bare", "ours", "naive"), "median_round_cpu_us"),
        "throughput": _overheads(s, ("bare", "ours", "naive"), "median_round_mean_us"),
        "request_p50": _overheads(s, ("bare", "ours", "naive"), "p50_us"),
    }
    if "middleware_alone" in results["inproc"]:
        a = results["inproc"]["middleware_alone"]
        alone = _overheads({**a, "bare": a["view"]}, ("bare", "ours", "naive"), "p50_us")
        alone["ours_mean"] = a["ours"]["median_round_mean_us"] - a["view"]["median_round_mean_us"]
        alone["naive_mean"] = a["naive"]["median_round_mean_us"] - a["view"]["median_round_mean_us"]
        out["alone"] = alone
    if "bare+auth" in s:
        out["auth"] = _overheads(s, ("bare+auth", "ours+auth", "naive+auth"), "median_round_cpu_us")
    ours_cpu, sdk_cpu = results["cpu"]["ours_added_us"], results["cpu"]["sdk_added_us"]
    cpu_ratio = ours_cpu / sdk_cpu if sdk_cpu > 0 else float("inf")
    out["cpu"] = {"ours": ours_cpu, "sdk": sdk_cpu, "ratio": cpu_ratio, "pass": cpu_ratio <= CPU_BAR}
    g = results["gunicorn"]["stacks"]
    out["gunicorn"] = {f"{n}_{q}": g[n][f"{q}_us"] for n in ("bare", "ours", "naive") for q in ("p50", "p99")}
    out["gunicorn"]["p50_ratio"] = g["ours"]["p50_us"] / g["bare"]["p50_us"]
    out["gunicorn"]["p99_ratio"] = g["ours"]["p99_us"] / g["bare"]["p99_us"]
    for kind, r in results.get("frameworks", {}).items():
        if "stacks" in r:
            out[kind] = {
                "cpu": _overheads(r["stacks"], ("bare", "ours", "naive"), "median_round_cpu_us"),
                "throughput": _overheads(r["stacks"], ("bare", "ours", "naive"), "median_round_mean_us"),
                "request_p50": _overheads(r["stacks"], ("bare", "ours", "naive"), "p50_us"),
            }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a bar is missed too")
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="rounds per stack in parts 1 and 4 (default 7 and 9): more rounds, a tighter median "
        "(30-40 rounds take about 5 minutes a part; see bench/README.md)",
    )
    parser.add_argument(
        "--receiver",
        choices=("raw", "full", "stock"),
        default="raw",
        help="raw: bench/rawreceiver.py, decodes after the run (default); full: the package's test "
        "receiver with TCP_NODELAY; stock: that receiver as shipped (adds ~40 ms per batch)",
    )
    parser.add_argument("--child", choices=("inproc", "cpu", *FRAMEWORKS), help=argparse.SUPPRESS)
    parser.add_argument("--ours-url", help=argparse.SUPPRESS)
    parser.add_argument("--sdk-url", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    global RECEIVER_KIND
    RECEIVER_KIND = args.receiver
    if args.child:
        child: Callable[[argparse.Namespace], dict[str, Any]] = {
            "inproc": child_inproc,
            "cpu": child_cpu,
        }.get(args.child, child_framework)
        print(json.dumps(child(args)), flush=True)
        return 0

    import django
    import segment.analytics.version as sdk_version
    import starlette

    started = time.monotonic()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "python": platform.python_version(),
        "django": django.get_version(),
        "flask": importlib.metadata.version("flask"),
        "starlette": starlette.__version__,
        "sdk": sdk_version.VERSION,
        "cpus": os.cpu_count(),
        "receiver": RECEIVER_KIND,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    log("part 1/4: in-process handler overhead ...")
    results["inproc"] = run_child("inproc", args)
    log("part 2/4: CPU per delivered message ...")
    results["cpu"] = run_child("cpu", args)
    log("part 3/4: gunicorn ...")
    results["gunicorn"] = run_gunicorn(args)
    log("part 4/4: Flask and Starlette in process ...")
    results["frameworks"] = run_frameworks(args)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    failures = report(results)
    print(
        f"\n({results['mode']} run, {results['seconds']} s, Python {results['python']}, Django "
        f"{results['django']}, Flask {results['flask']}, Starlette {results['starlette']}, "
        f"SDK {results['sdk']}, {results['cpus']} CPUs, load average {results['loadavg']})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    delivery_failures = [f for f in failures if f.startswith("delivery")]
    if delivery_failures or (args.strict and failures):
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
