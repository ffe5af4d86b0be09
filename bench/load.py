"""Real-server load: p50/p99 and the workers' CPU per request under gunicorn, bare vs ours vs naive.

What users feel. Three gunicorns (sync worker class, 2 workers each) serve the Django app of
``common`` with sessions and auth (``bare+auth``, ``ours+auth``, ``naive+auth``); the two
Segment stacks post to receivers of their own, over plain HTTP and then over TLS (a
self-signed certificate trusted through ``REQUESTS_CA_BUNDLE``). Load comes from client
*processes* (one GIL each, none shared with a server), a new connection per request, as
the sync worker closes each one.

Each of ``--rounds`` rounds gives every stack, in rotated order:

1. **latency**: ``--latency`` requests at concurrency 2, after an untimed pre-roll longer
   than one flush interval (so the timed requests meet the sender in its steady rhythm),
   then a wait until the stack's receiver holds every message;
2. **CPU**: ``--cpu`` requests at concurrency 4; utime+stime of both workers from before
   the first request until the receiver holds every message and the workers are at rest,
   so the delivery is paid by the chunk that caused it.

Reported per transport: the medians over rounds of p50, p99 and CPU per request, ours and
naive against bare. After SIGTERM each receiver must hold exactly one page call per tracked
request (warm-up and pre-roll included).

Run: ``python bench/load.py [--rounds 3] [--latency N] [--cpu N] [--transports http,tls]
[--json PATH]``. Nothing leaves 127.0.0.1; see bench/README.md.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import http.client
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import common

STACKS = ("bare+auth", "ours+auth", "naive+auth")
SENDING = ("ours+auth", "naive+auth")
SHORT = {"bare+auth": "bare", "ours+auth": "ours", "naive+auth": "naive"}
LATENCY_CONCURRENCY, CPU_CONCURRENCY = 2, 4
#: Longer than the package's default FLUSH_INTERVAL (0.5 s): a sender's burst falls inside.
PREROLL_S = 0.7
DRAIN_TIMEOUT_S = 20.0
TARGET = f"{common.PAGE_PATH}?{common.QUERY}"


# ---------------------------------------------------------------------- load generator
def one_request(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", TARGET, headers=common.HEADERS)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def client_main(conn: Connection) -> None:
    """A client process: jobs ``(port, preroll_until, n, deadline)`` from the pipe;
    answers the timed latencies (ns), the pre-roll count and the non-200 count."""
    while (job := conn.recv()) is not None:
        port, preroll_until, n, deadline = job
        try:
            pre = bad = 0
            while time.monotonic() < preroll_until and pre < 20_000:
                bad += one_request(port) != 200
                pre += 1
            times = array.array("q")
            pc = time.perf_counter_ns
            for _ in range(n):
                if time.monotonic() > deadline:
                    break
                t0 = pc()
                status = one_request(port)
                times.append(pc() - t0)
                bad += status != 200
            conn.send({"times": times.tobytes(), "preroll": pre, "bad": bad})
        except Exception as exc:  # reported by the parent, which stops the run
            conn.send({"error": f"{type(exc).__name__}: {exc}"})


class Clients:
    """Spawned client processes (nothing of the parent inherited), one job each per chunk."""

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

    def run(
        self, port: int, n: int, concurrency: int, deadline: float, preroll_s: float = 0.0
    ) -> tuple[list[int], int]:
        """``n`` requests shared by ``concurrency`` clients; (latencies in ns, all requests made)."""
        until = time.monotonic() + preroll_s
        pipes = self.pipes[:concurrency]
        for i, pipe in enumerate(pipes):
            pipe.send((port, until, n // concurrency + (i < n % concurrency), deadline))
        times: list[int] = []
        made = 0
        for pipe in pipes:
            if not pipe.poll(max(1.0, deadline - time.monotonic() + 15)):
                raise RuntimeError("a client process did not answer")
            res = pipe.recv()
            if "error" in res or res["bad"]:
                raise RuntimeError(f"port {port}: {res}")
            chunk = array.array("q", res["times"])
            times.extend(chunk)
            made += len(chunk) + res["preroll"]
        return times, made

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for proc in self.procs:
            proc.join(3)
            if proc.is_alive():
                proc.terminate()


# ---------------------------------------------------------------------- one transport
def cpu_at_rest(pids: list[int], timeout: float = 5.0) -> float:
    """The workers' CPU once two reads 150 ms apart agree: the worker and its sender have
    finished what the chunk gave them (bounded by ``timeout``)."""
    prev = common.cpu_seconds(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.15)
        cur = common.cpu_seconds(pids)
        if cur == prev:
            return cur
        prev = cur
    return prev


def run_transport(transport: str, args: argparse.Namespace, clients: Clients, workdir: str) -> dict[str, Any]:
    """bare / ours / naive under gunicorn, posting over ``transport``; figures per round."""
    tls = common.make_cert(workdir) if transport == "tls" else None
    env = {"REQUESTS_CA_BUNDLE": tls[0], "CURL_CA_BUNDLE": ""} if tls else {}
    receivers = {s: common.Receiver(tls=tls) for s in SENDING}
    servers: dict[str, common.Gunicorn] = {}
    sent = dict.fromkeys(STACKS, 0)
    deadline = time.monotonic() + args.limit
    drain_timeouts: list[str] = []

    def load(stack: str, n: int, concurrency: int, preroll: float = 0.0) -> list[int]:
        times, made = clients.run(servers[stack].port, n, concurrency, deadline, preroll)
        sent[stack] += made
        return times

    def drain(stack: str) -> None:
        if stack in receivers:
            got = receivers[stack].wait_for(sent[stack], DRAIN_TIMEOUT_S)
            if got < sent[stack]:
                drain_timeouts.append(f"{stack}: {got}/{sent[stack]}")

    rounds: dict[str, list[dict[str, float]]] = {s: [] for s in STACKS}
    try:
        for stack in STACKS:
            rx = receivers.get(stack)
            servers[stack] = common.Gunicorn(stack, rx.url if rx else None, workdir, env=env)
        workers = {s: server.wait_ready() for s, server in servers.items()}
        for stack in STACKS:
            load(stack, args.warmup, CPU_CONCURRENCY)
            drain(stack)
        for r in range(args.rounds):
            for stack in STACKS[r % 3 :] + STACKS[: r % 3]:
                lat = load(stack, args.latency, LATENCY_CONCURRENCY, PREROLL_S)
                drain(stack)
                before = common.cpu_seconds(workers[stack])
                cpu_lat = load(stack, args.cpu, CPU_CONCURRENCY)
                drain(stack)
                spent = cpu_at_rest(workers[stack]) - before
                if common.children_of(servers[stack].proc.pid) != workers[stack]:
                    raise RuntimeError(f"gunicorn {stack}: a worker restarted; its CPU counters are lost")
                rounds[stack].append(
                    {
                        "p50_us": common.pct(lat, 50) / 1000,
                        "p99_us": common.pct(lat, 99) / 1000,
                        "cpu_us": spent / max(1, len(cpu_lat)) * 1e6,
                    }
                )
            common.log(f"  {transport}: round {r + 1}/{args.rounds} done")
    finally:
        for server in servers.values():
            server.stop()
        received = {s: rx.summary() for s, rx in receivers.items()}
        for rx in receivers.values():
            rx.stop()
    stacks = {
        s: {k: common.median(x[k] for x in rounds[s]) for k in ("p50_us", "p99_us", "cpu_us")} for s in STACKS
    }
    bare = stacks["bare+auth"]
    for s in SENDING:
        stacks[s]["p99_ratio"] = stacks[s]["p99_us"] / bare["p99_us"]
        stacks[s]["cpu_added"] = stacks[s]["cpu_us"] / bare["cpu_us"] - 1
    return {
        "stacks": stacks,
        "rounds": rounds,
        "sent": {s: sent[s] for s in SENDING},
        "received": received,
        "delivered_ok": {s: common.one_page_per_request(received[s], sent[s]) for s in SENDING},
        "drain_timeouts": drain_timeouts,
    }


def report(results: dict[str, Any]) -> bool:
    ok = True
    for transport, t in results["transports"].items():
        print(
            f"\n{transport}: gunicorn sync, 2 workers per stack; p50/p99 at concurrency "
            f"{LATENCY_CONCURRENCY}, worker CPU at {CPU_CONCURRENCY}; "
            f"medians of {len(t['rounds']['bare+auth'])} rounds"
        )
        rows = []
        for s, v in t["stacks"].items():
            extra = (f"{v['p99_ratio']:.2f}x", f"{v['cpu_added'] * 100:+.1f} %") if s in SENDING else ("", "")
            per_round = " ".join(f"{x['p99_us']:.0f}" for x in t["rounds"][s])
            rows.append((SHORT[s], v["p50_us"], v["p99_us"], v["cpu_us"], *extra, per_round))
        print(
            common.table(
                ("stack", "p50 µs", "p99 µs", "cpu µs/req", "p99/bare", "cpu vs bare", "p99 per round"), rows
            )
        )
        for s in SENDING:
            got = t["received"][s]
            verdict = "ok" if t["delivered_ok"][s] else "MISMATCH"
            print(
                f"  delivery {SHORT[s]}: sent {t['sent'][s]}, received {got['messages']} "
                f"({got['message_ids']} ids): {verdict}"
            )
            ok = ok and t["delivered_ok"][s]
        if t["drain_timeouts"]:
            print(f"  drain timeouts: {t['drain_timeouts']}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--latency", type=int, default=2000, help="timed requests per stack and round, concurrency 2"
    )
    parser.add_argument(
        "--cpu", type=int, default=1000, help="requests per stack and round for the CPU, concurrency 4"
    )
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--transports", default="http,tls", help="comma-separated: http, tls")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds a transport may take")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"versions": common.versions(), "transports": {}}
    clients = Clients(max(LATENCY_CONCURRENCY, CPU_CONCURRENCY))
    workdir = tempfile.mkdtemp(prefix="segment-bench-load-")
    try:
        for transport in args.transports.split(","):
            common.log(f"load: {transport} ...")
            results["transports"][transport] = run_transport(transport, args, clients, workdir)
    except BaseException:
        common.log(f"load: failed; gunicorn logs kept in {workdir}")
        raise
    finally:
        clients.close()
    shutil.rmtree(workdir, ignore_errors=True)
    ok = report(results)
    print(f"({results['versions']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
