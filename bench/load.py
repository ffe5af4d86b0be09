"""Real-server load: p50/p99 and the workers' CPU per request; two scenarios.

**pages** (the default): what users feel. Three gunicorns (sync worker class, 2 workers each)
serve the Django app of ``common`` with sessions and auth (``bare+auth``, ``ours+auth``,
``naive+auth``); the two Segment stacks post to receivers of their own, over plain HTTP and
then over TLS (a self-signed certificate trusted through ``REQUESTS_CA_BUNDLE``). Load comes
from client *processes* (one GIL each, none shared with a server), or with ``--client ab``
from ApacheBench (one C process, less of the shared cores), a new connection per request,
as the sync worker closes each one.

Each of ``--rounds`` rounds gives every stack, in rotated order:

1. **latency**: ``--latency`` requests at concurrency 2, after an untimed pre-roll longer
   than one flush interval (so the timed requests meet the sender in its steady rhythm),
   then a wait until the stack's receiver holds every message;
2. **CPU**: ``--cpu`` requests at concurrency 4; utime+stime of both workers from before
   the first request until the receiver holds every message and the workers are at rest,
   so the delivery is paid by the chunk that caused it.

Reported per transport: the medians over rounds of p50, p99 and CPU per request, ours and
naive against bare, and of the CPU how much ran off the workers' main threads (**off-main**:
the threads that are not serving requests, for ours its senders; for bare, none; read in
clock ticks, so a round's figure is good to about a tick per worker over its requests). After
SIGTERM each receiver must hold exactly one page call per tracked request (warm-up and
pre-roll included). ``--before REV`` adds a fourth stack,
``before+auth``: the same app and settings as ours, with the package as it was at git
revision ``REV`` (``git archive``), so a change is reported before and after in one run.

**collect**: the first-party analytics.js endpoint against the same app's empty JSON view.
For each of ``--servers`` (gunicorn ``sync`` and ``gthread`` serving the Django app's
``collect`` stack, ``uvicorn`` serving the Starlette one, optionally ``uvicorn-django``), 2
workers and a receiver of its own; each round, in rotated order, ``--cpu`` requests at
concurrency 4 to the empty view, to ``v1/t`` (one track call) and to ``v1/b`` (``--batch``
calls), as analytics-next posts them (``text/plain`` JSON, the visitor's cookie, the
page's Origin and Referer, a fresh messageId per event). Requests/s and events/s over the
answers; the workers' CPU until the receiver holds every event and the workers are at rest;
an endpoint's *added* CPU per event is its CPU per request less the empty view's, divided by
its events. After SIGTERM the receiver must hold exactly one track call per event posted,
each messageId once, and nothing else (no page call for a request to the mount).

Run: ``python bench/load.py [--rounds 3] [--latency N] [--cpu N] [--transports http,tls]
[--scenario pages|collect] [--servers sync,gthread,uvicorn] [--batch 20] [--receiver suite|lean]
[--client python|ab] [--before REV] [--json PATH]``.
Nothing leaves 127.0.0.1; see bench/README.md.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import dataclasses
import http.client
import io
import itertools
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import common

STACKS = ("bare+auth", "ours+auth", "naive+auth")
SENDING = ("ours+auth", "naive+auth")
#: ``--before``: ours, with the package of another revision first on the workers' path.
BEFORE = "before+auth"
SHORT = {"bare+auth": "bare", "ours+auth": "ours", "naive+auth": "naive", BEFORE: "before"}
LATENCY_CONCURRENCY, CPU_CONCURRENCY = 2, 4
#: Longer than the package's default FLUSH_INTERVAL (0.5 s): a sender's burst falls inside.
PREROLL_S = 0.7
DRAIN_TIMEOUT_S = 20.0
TARGET = f"{common.PAGE_PATH}?{common.QUERY}"


# ---------------------------------------------------------------------- load generator
#: Where a request's body takes a fresh messageId (a collect target's body template).
MESSAGE_ID = b"@MID@"


def one_request(
    port: int,
    method: str = "GET",
    path: str = TARGET,
    body: bytes | None = None,
    headers: dict[str, str] = common.HEADERS,
) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def requester(port: int, target: dict[str, Any] | None) -> Callable[[], int]:
    """One request of the job: the page GET, or a collect ``target`` (method, path, headers,
    body) whose body gets a messageId no other request of any run has in each slot."""
    if target is None:
        return lambda: one_request(port)
    parts = target["body"].split(MESSAGE_ID)
    prefix = f"bench-{uuid.uuid4().hex[:12]}-".encode()
    seq = itertools.count()

    def call() -> int:
        body = parts[0] + b"".join(prefix + str(next(seq)).encode() + part for part in parts[1:])
        return one_request(port, target["method"], target["path"], body, target["headers"])

    return call


def client_main(conn: Connection) -> None:
    """A client process: jobs ``(port, preroll_until, n, deadline, target)`` from the pipe;
    answers the timed latencies (ns), the pre-roll count and the non-200 count."""
    while (job := conn.recv()) is not None:
        port, preroll_until, n, deadline, target = job
        try:
            request = requester(port, target)
            pre = bad = 0
            while time.monotonic() < preroll_until and pre < 20_000:
                bad += request() != 200
                pre += 1
            times = array.array("q")
            pc = time.perf_counter_ns
            for _ in range(n):
                if time.monotonic() > deadline:
                    break
                t0 = pc()
                status = request()
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
        self,
        port: int,
        n: int,
        concurrency: int,
        deadline: float,
        preroll_s: float = 0.0,
        target: dict[str, Any] | None = None,
    ) -> tuple[list[int], int]:
        """``n`` requests (the page GET, or ``target``) shared by ``concurrency`` clients;
        (latencies in ns, all requests made)."""
        until = time.monotonic() + preroll_s
        pipes = self.pipes[:concurrency]
        for i, pipe in enumerate(pipes):
            pipe.send((port, until, n // concurrency + (i < n % concurrency), deadline, target))
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


@dataclasses.dataclass
class Load:
    """One job's answer: p50/p99 of its timed requests (µs), how many were timed, and every
    request made (pre-roll included), for the delivery check."""

    p50_us: float
    p99_us: float
    timed: int
    made: int

    @classmethod
    def of(cls, times_ns: Sequence[int], made: int) -> Load:
        return cls(common.pct(times_ns, 50) / 1000, common.pct(times_ns, 99) / 1000, len(times_ns), made)


def ab_load(port: int, n: int, concurrency: int, deadline: float, preroll_s: float, workdir: str) -> Load:
    """The same job with ApacheBench (``ab``, Debian's apache2-utils): one C process, a new
    connection per request, so the load generator takes far less of the two cores the
    workers share than Python clients do. The issue's own figures were taken with it.
    Percentiles come from its ``-e`` table (every whole percent, in ms with decimals)."""
    url = f"http://127.0.0.1:{port}{TARGET}"
    headers = [arg for k, v in common.HEADERS.items() for arg in ("-H", f"{k}: {v}")]
    conc = ["-c", str(concurrency), *headers]
    made = 0
    until = time.monotonic() + preroll_s
    while time.monotonic() < until:  # in counted chunks: ab's -t leaves the count inexact
        made += _ab(["-n", "200", *conc, url], deadline)
    table = os.path.join(workdir, "ab-percentiles.csv")
    done = _ab(["-n", str(n), "-e", table, *conc, url], deadline)
    ms = [float(line.split(",")[1]) for line in Path(table).read_text().splitlines()[1:]]
    # The table should rise with the percent; for a small run ab's last rows can fall back
    # (its p99 row held a p50 at n=40), so each percentile is the highest row up to it.
    return Load(max(ms[:51]) * 1000, max(ms[:100]) * 1000, done, made + done)


def _ab(args: list[str], deadline: float) -> int:
    """Run ab; the requests it completed. Any failed or non-2xx answer stops the run."""
    proc = subprocess.run(
        ["ab", "-q", "-s", "10", *args],
        capture_output=True,
        text=True,
        timeout=max(5.0, deadline - time.monotonic() + 15),
    )
    out = proc.stdout
    complete = re.search(r"Complete requests:\s+(\d+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    if proc.returncode or not complete or (failed and int(failed.group(1))) or "Non-2xx" in out:
        raise RuntimeError(f"ab: {proc.returncode}: {out[-600:]} {proc.stderr[-300:]}")
    return int(complete.group(1))


# ---------------------------------------------------------------------- one transport
def cpu_at_rest(pids: list[int], timeout: float = 5.0) -> tuple[float, float]:
    """The workers' CPU, all threads and main threads, once two reads 150 ms apart agree:
    the worker and its sender have finished what the chunk gave them (bounded by
    ``timeout``). Read together so that their difference is the other threads' CPU."""

    def read() -> tuple[float, float]:
        return common.cpu_seconds(pids), common.cpu_seconds(pids, main_thread=True)

    prev = read()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.15)
        cur = read()
        if cur == prev:
            return cur
        prev = cur
    return prev


def package_at(rev: str, workdir: str) -> tuple[str, str]:
    """The package as it was at git revision ``rev``, extracted under ``workdir``: (the
    directory to put first on a worker's path, the full commit id)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=common.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "segment_middleware"],
        cwd=common.ROOT,
        capture_output=True,
        check=True,
    ).stdout
    target = os.path.join(workdir, f"before-{commit[:12]}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+: refuse links out of the tree
            tar.extractall(target, filter="data")
        else:
            tar.extractall(target)  # our own repository's archive: nothing to filter
    return target, commit


#: A stack's figures per round, and as medians over the rounds (the table's order).
ROUND_FIGURES = ("p50_us", "p99_us", "cpu_us", "other_threads_us")


def run_transport(
    transport: str, args: argparse.Namespace, clients: Clients, workdir: str, before: str | None
) -> dict[str, Any]:
    """bare / ours / naive under gunicorn, posting over ``transport``, and with ``before``
    (the directory of another revision's package) ours once more on that package; figures
    per round."""
    tls = common.make_cert(workdir) if transport == "tls" else None
    env = {"REQUESTS_CA_BUNDLE": tls[0], "CURL_CA_BUNDLE": ""} if tls else {}
    extra = (BEFORE,) if before else ()
    stacks_run, sending = STACKS + extra, SENDING + extra
    receivers = {s: common.Receiver(tls=tls) for s in sending}
    servers: dict[str, common.Gunicorn] = {}
    sent = dict.fromkeys(stacks_run, 0)
    deadline = time.monotonic() + args.limit
    drain_timeouts: list[str] = []

    def load(stack: str, n: int, concurrency: int, preroll: float = 0.0) -> Load:
        port = servers[stack].port
        if args.client == "ab":
            got = ab_load(port, n, concurrency, deadline, preroll, workdir)
        else:
            got = Load.of(*clients.run(port, n, concurrency, deadline, preroll))
        sent[stack] += got.made
        return got

    def drain(stack: str) -> None:
        if stack in receivers:
            got = receivers[stack].wait_for(sent[stack], DRAIN_TIMEOUT_S)
            if got < sent[stack]:
                drain_timeouts.append(f"{stack}: {got}/{sent[stack]}")

    rounds: dict[str, list[dict[str, float]]] = {s: [] for s in stacks_run}
    try:
        for stack in stacks_run:
            rx = receivers.get(stack)
            older = stack == BEFORE  # ours' app and settings, the older package first on the path
            servers[stack] = common.Gunicorn(
                "ours+auth" if older else stack,
                rx.url if rx else None,
                workdir,
                env=env,
                pythonpath=before if older else None,
            )
        workers = {s: server.wait_ready() for s, server in servers.items()}
        if before:
            common.check_package_from(servers[BEFORE], before)
        for stack in stacks_run:
            load(stack, args.warmup, CPU_CONCURRENCY)
            drain(stack)
        for r in range(args.rounds):
            turn = r % len(stacks_run)
            for stack in stacks_run[turn:] + stacks_run[:turn]:
                lat = load(stack, args.latency, LATENCY_CONCURRENCY, PREROLL_S)
                drain(stack)
                before, before_main = cpu_at_rest(workers[stack])
                cpu_load = load(stack, args.cpu, CPU_CONCURRENCY)
                drain(stack)
                after, after_main = cpu_at_rest(workers[stack])
                spent = after - before
                off_main = spent - (after_main - before_main)  # for ours: the senders
                if servers[stack].worker_pids() != workers[stack]:
                    raise RuntimeError(f"gunicorn {stack}: a worker restarted; its CPU counters are lost")
                rounds[stack].append(
                    {
                        "p50_us": lat.p50_us,
                        "p99_us": lat.p99_us,
                        "cpu_us": spent / max(1, cpu_load.timed) * 1e6,
                        "other_threads_us": off_main / max(1, cpu_load.timed) * 1e6,
                    }
                )
            common.log(f"  {transport}: round {r + 1}/{args.rounds} done")
    finally:
        for server in servers.values():
            server.stop()
        received = {s: rx.summary() for s, rx in receivers.items()}
        for rx in receivers.values():
            rx.stop()
    stacks: dict[str, dict[str, Any]] = {
        s: {k: common.median(x[k] for x in rounds[s]) for k in ROUND_FIGURES} for s in stacks_run
    }
    bare = stacks["bare+auth"]
    for s in sending:
        stacks[s]["p99_ratio"] = stacks[s]["p99_us"] / bare["p99_us"]
        # None: the bare stack's CPU was below a clock tick (a tiny run), no ratio to give
        stacks[s]["cpu_added"] = stacks[s]["cpu_us"] / bare["cpu_us"] - 1 if bare["cpu_us"] else None
    return {
        "stacks": stacks,
        "rounds": rounds,
        "sent": {s: sent[s] for s in sending},
        "received": received,
        "delivered_ok": {s: common.one_page_per_request(received[s], sent[s]) for s in sending},
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
            added = "n/a" if v.get("cpu_added") is None else f"{v['cpu_added'] * 100:+.1f} %"
            extra = (f"{v['p99_ratio']:.2f}x", added) if s in t["sent"] else ("", "")
            per_round = " ".join(f"{x['p99_us']:.0f}" for x in t["rounds"][s])
            rows.append((SHORT[s], *(v[k] for k in ROUND_FIGURES), *extra, per_round))
        head = ("stack", "p50 µs", "p99 µs", "cpu µs/req", "off-main", "p99/bare", "cpu vs bare")
        print(common.table((*head, "p99 per round"), rows))
        for s in t["sent"]:
            got = t["received"][s]
            verdict = "ok" if t["delivered_ok"][s] else "MISMATCH"
            print(
                f"  delivery {SHORT[s]}: sent {t['sent'][s]}, received {got['messages']} "
                f"({got['message_ids']} ids) by the {got['kind']} receiver: {verdict}"
            )
            ok = ok and t["delivered_ok"][s]
        if t["drain_timeouts"]:
            print(f"  drain timeouts: {t['drain_timeouts']}")
    return ok


# ---------------------------------------------------------------------- scenario "collect"
#: Server kinds: the Django app (``collect`` stack) under gunicorn, Starlette or Django under uvicorn.
COLLECT_SERVERS = {
    "sync": "gunicorn sync, Django",
    "gthread": "gunicorn gthread, Django",
    "uvicorn": "uvicorn, Starlette",
    "uvicorn-django": "uvicorn, Django (ASGI)",
}
NOOP = "noop"
SITE = "https://shop.example.com"


def collect_server(kind: str, host: str, workdir: str, threads: int) -> common.Gunicorn:
    if kind == "sync":
        return common.Gunicorn("collect", host, workdir)
    if kind == "gthread":
        return common.Gunicorn("collect", host, workdir, worker_class="gthread", threads=threads)
    if kind == "uvicorn":
        return common.Uvicorn("collect", host, workdir)
    if kind == "uvicorn-django":
        return common.Uvicorn("collect", host, workdir, app="common:django_asgi_app")
    raise ValueError(f"unknown server {kind!r}: one of {', '.join(COLLECT_SERVERS)}")


def browser_event(index: int) -> dict[str, Any]:
    """A track call as analytics-next's ``Segment.io`` plugin posts it from the product page
    (its messageId filled per request by the client)."""
    page = f"{SITE}{common.PAGE_PATH}?{common.QUERY}"
    return {
        "type": "track",
        "event": "Product Viewed",
        "properties": {
            "product_id": "507f1f77bcf86cd799439011",
            "sku": "BW-0042",
            "name": "Blue Widget",
            "category": "Widgets",
            "price": 18.99,
            "currency": "USD",
            "position": index,
        },
        "context": {
            "page": {
                "path": common.PAGE_PATH,
                "referrer": common.HEADERS["Referer"],
                "search": f"?{common.QUERY}",
                "title": "Blue Widget | Shop",
                "url": page,
            },
            "library": {"name": "analytics.js", "version": "npm:next-1.81.0"},
            "userAgent": common.HEADERS["User-Agent"],
            "locale": "en-US",
            "campaign": {"source": "newsletter", "medium": "email", "name": "spring_sale", "content": "hero"},
        },
        "integrations": {},
        "messageId": MESSAGE_ID.decode(),
        "anonymousId": common.ANONYMOUS_ID,
        "timestamp": "2026-12-07T08:00:00.000Z",
        "writeKey": common.WRITE_KEY,
        "userId": None,
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
    }


def collect_targets(batch: int) -> dict[str, tuple[dict[str, Any], int]]:
    """Each endpoint's request and the events it carries: ``noop`` (the app's empty JSON
    view, given the single event's body), ``v1/t`` (one event), ``v1/b`` (``batch`` events,
    as analytics-next's batching strategy posts them)."""
    headers = {
        "Host": "shop.example.com",
        "User-Agent": common.HEADERS["User-Agent"],
        "Accept": "*/*",
        "Accept-Language": common.HEADERS["Accept-Language"],
        "Origin": SITE,
        "Referer": f"{SITE}{common.PAGE_PATH}",
        "Cookie": common.HEADERS["Cookie"],
        "Content-Type": "text/plain;charset=UTF-8",
    }
    single = json.dumps({**browser_event(0), "sentAt": "2026-12-07T08:00:00.100Z"}).encode()
    events = [{k: v for k, v in browser_event(i).items() if k != "writeKey"} for i in range(batch)]
    batched = json.dumps(
        {"batch": events, "sentAt": "2026-12-07T08:00:00.100Z", "writeKey": common.WRITE_KEY}
    )
    mount = common.COLLECT_MOUNT
    return {
        NOOP: ({"method": "POST", "path": common.NOOP_PATH, "headers": headers, "body": single}, 0),
        "v1/t": ({"method": "POST", "path": f"{mount}v1/t", "headers": headers, "body": single}, 1),
        "v1/b": (
            {"method": "POST", "path": f"{mount}v1/b", "headers": headers, "body": batched.encode()},
            batch,
        ),
    }


def run_collect(kind: str, args: argparse.Namespace, clients: Clients, workdir: str) -> dict[str, Any]:
    """One server kind: the empty view, ``v1/t`` and ``v1/b`` in rotated order each round,
    ``--cpu`` requests at concurrency 4 each; requests/s over the answers, the workers' CPU
    until the receiver holds every event and the workers are at rest."""
    targets = collect_targets(args.batch)
    order = list(targets)
    receiver = common.Receiver()
    server = collect_server(kind, receiver.url, workdir, args.threads)
    deadline = time.monotonic() + args.limit
    sent = 0
    drain_timeouts: list[str] = []
    rounds: dict[str, list[dict[str, float]]] = {e: [] for e in order}

    def load(endpoint: str, n: int) -> tuple[list[int], float]:
        nonlocal sent
        target, events = targets[endpoint]
        t0 = time.monotonic()
        times, made = clients.run(server.port, n, CPU_CONCURRENCY, deadline, target=target)
        wall = time.monotonic() - t0
        sent += made * events
        got = receiver.wait_for(sent, DRAIN_TIMEOUT_S)
        if got < sent:
            drain_timeouts.append(f"{endpoint}: {got}/{sent}")
        return times, wall

    try:
        workers = server.wait_ready()
        for endpoint in order:
            load(endpoint, args.warmup)
        for r in range(args.rounds):
            for endpoint in order[r % 3 :] + order[: r % 3]:
                before = common.cpu_seconds(workers)
                times, wall = load(endpoint, args.cpu)
                spent = cpu_at_rest(workers)[0] - before
                if server.worker_pids() != workers:
                    raise RuntimeError(f"{kind}: a worker restarted; its CPU counters are lost")
                events = targets[endpoint][1]
                n = max(1, len(times))
                rounds[endpoint].append(
                    {
                        "req_s": len(times) / wall,
                        "events_s": len(times) * events / wall,
                        "cpu_us_req": spent / n * 1e6,
                        "p50_us": common.pct(times, 50) / 1000,
                    }
                )
            common.log(f"  {kind}: round {r + 1}/{args.rounds} done")
    finally:
        server.stop()
        received = receiver.summary()
        receiver.stop()
    endpoints: dict[str, dict[str, Any]] = {
        e: {k: common.median(x[k] for x in rounds[e]) for k in rounds[e][0]} for e in order
    }
    base = endpoints[NOOP]["cpu_us_req"]
    for endpoint in order[1:]:
        v, events = endpoints[endpoint], targets[endpoint][1]
        v["events"] = events
        v["cpu_us_event"] = v["cpu_us_req"] / events
        v["added_us_event"] = (v["cpu_us_req"] - base) / events
        v["added_vs_noop"] = v["added_us_event"] / base if base > 0 else float("inf")
        pairs = zip(rounds[endpoint], rounds[NOOP], strict=True)
        v["added_per_round"] = [(x["cpu_us_req"] - y["cpu_us_req"]) / events for x, y in pairs]
    return {
        "server": COLLECT_SERVERS[kind],
        "endpoints": endpoints,
        "rounds": rounds,
        "sent": sent,
        "received": received,
        "delivered_ok": common.one_page_per_request(received, sent, call="track"),
        "drain_timeouts": drain_timeouts,
    }


def report_collect(results: dict[str, Any]) -> bool:
    ok = True
    for kind, t in results["servers"].items():
        n = len(t["rounds"][NOOP])
        print(f"\n{kind} ({t['server']}), 2 workers; concurrency {CPU_CONCURRENCY}; medians of {n} rounds")
        rows = []
        for endpoint, v in t["endpoints"].items():
            if endpoint == NOOP:
                per_round = " ".join(f"{x['cpu_us_req']:.0f}" for x in t["rounds"][NOOP])
                row = ("empty view", "", v["req_s"], "", v["cpu_us_req"], "", "", "", v["p50_us"])
                rows.append((*row, per_round))
                continue
            rows.append(
                (
                    endpoint,
                    v["events"],
                    v["req_s"],
                    v["events_s"],
                    v["cpu_us_req"],
                    v["cpu_us_event"],
                    v["added_us_event"],
                    f"{v['added_vs_noop']:.2f}",
                    v["p50_us"],
                    " ".join(f"{x:.0f}" for x in v["added_per_round"]),
                )
            )
        headers = ("endpoint", "events", "req/s", "events/s", "cpu µs/req", "cpu µs/event", "added µs/event")
        print(common.table((*headers, "added/empty", "p50 µs", "cpu or added, per round"), rows))
        got = t["received"]
        verdict = "ok" if t["delivered_ok"] else "MISMATCH"
        ids = got["message_ids"]
        print(f"  delivery: sent {t['sent']} events, received {got['messages']} ({ids} ids): {verdict}")
        if t["drain_timeouts"]:
            print(f"  drain timeouts: {t['drain_timeouts']}")
        ok = ok and t["delivered_ok"]
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
    parser.add_argument(
        "--scenario",
        choices=("pages", "collect"),
        default="pages",
        help="pages: bare/ours/naive page calls; collect: the analytics.js endpoint vs an empty JSON view",
    )
    parser.add_argument(
        "--servers",
        default="sync,gthread,uvicorn",
        help=f"collect: comma-separated, of {', '.join(COLLECT_SERVERS)}",
    )
    parser.add_argument("--batch", type=int, default=20, help="collect: events in a v1/b batch")
    parser.add_argument("--threads", type=int, default=4, help="collect: threads of a gthread worker")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds a transport may take")
    parser.add_argument(
        "--receiver",
        choices=("suite", "lean"),
        default="suite",
        help="suite: the test suite's receiver (validates each message); lean: parses between timed phases",
    )
    parser.add_argument(
        "--client",
        choices=("python", "ab"),
        default="python",
        help="pages: the load generator; ab (ApacheBench, apt-get install apache2-utils) takes less CPU",
    )
    parser.add_argument(
        "--before",
        metavar="REV",
        help="pages: also run ours with the package of git revision REV (before and after, in one run)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    if args.before and args.scenario != "pages":
        parser.error("--before: the pages scenario only")
    if args.client == "ab" and (args.scenario != "pages" or shutil.which("ab") is None):
        parser.error("--client ab: the pages scenario only, with ab on PATH (Debian: apache2-utils)")
    common.LEAN_RECEIVER = args.receiver == "lean"
    collect = args.scenario == "collect"
    results: dict[str, Any] = {
        "versions": common.versions(),
        "scenario": args.scenario,
        "receiver": args.receiver,
        "client": args.client,
    }
    results["servers" if collect else "transports"] = {}
    clients = Clients(max(LATENCY_CONCURRENCY, CPU_CONCURRENCY))
    workdir = tempfile.mkdtemp(prefix="segment-bench-load-")
    before = None
    try:
        if args.before:
            before, results["before"] = package_at(args.before, workdir)
        if collect:
            for kind in args.servers.split(","):
                common.log(f"load: collect under {kind} ...")
                results["servers"][kind] = run_collect(kind, args, clients, workdir)
        else:
            for transport in args.transports.split(","):
                common.log(f"load: {transport} ...")
                results["transports"][transport] = run_transport(transport, args, clients, workdir, before)
    except BaseException:
        common.log(f"load: failed; server logs kept in {workdir}")
        raise
    finally:
        clients.close()
    shutil.rmtree(workdir, ignore_errors=True)
    ok = report_collect(results) if collect else report(results)
    if "before" in results:
        print(f"before: the package at {results['before']}")
    print(f"({results['versions']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
