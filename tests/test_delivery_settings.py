"""The delivery settings and the README's "Delivery guarantees", one process per test.

Each test runs a short script the way a user's task worker would (``configure(...)``,
``tracker().track(...)``, ``flush()``, ``stats()``, a normal exit) against the receiver on
127.0.0.1, and checks what the receiver saw (how many posts, when, with which headers),
the script's ``stats()``, its log lines, and what the store kept (read with the
``segment-middleware`` command). Timing bounds have a floor that a broken setting
crosses (a retry cannot come early) and a generous ceiling for a loaded machine.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY, stored
from segment_receiver import ReceivedRequest, SegmentReceiver
from servers import ROOT

PRELUDE = """
import json, logging, os, sys, time
import segment_middleware
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="LOG %(levelname)s %(message)s")
segment_middleware.configure(**json.loads(os.environ["TEST_SETTINGS"]))
t = segment_middleware.tracker(user_id="u-1")


def report(**extra):
    print("RESULT " + json.dumps({"stats": segment_middleware.stats(), **extra}), flush=True)


def posting(n, timeout=10.0):
    # Wait until n batches are being posted: a condition, not a guess at how long.
    from segment_middleware.pipelines import all_deliveries

    deadline = time.monotonic() + timeout
    while sum(d.posting for d in all_deliveries()) < n:
        assert time.monotonic() < deadline, f"no {n} post(s) under way after {timeout} s"
        time.sleep(0.01)
"""


@dataclass
class Run:
    returncode: int
    result: dict[str, Any]
    log: list[str]
    ended_at: float | None  # time.monotonic() when the script's body ended (END line)
    exited_at: float

    @property
    def stats(self) -> dict[str, int]:
        return self.result["stats"]  # type: ignore[no-any-return]

    def log_text(self) -> str:
        return "\n".join(self.log)


def start(
    body: str, settings: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + textwrap.dedent(body) + '\nprint("END", time.monotonic(), flush=True)\n')
    path = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **(env or {}), "TEST_SETTINGS": json.dumps(settings), "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> Run:
    out, err = proc.communicate(timeout=timeout)
    exited_at = time.monotonic()
    result: dict[str, Any] = {}
    ended_at = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
        elif line.startswith("END "):
            ended_at = float(line.split()[1])
    log = [line for line in err.splitlines() if line.startswith("LOG ")]
    assert proc.returncode == 0, f"script failed ({proc.returncode}):\n{err[-3000:]}"
    return Run(proc.returncode, result, log, ended_at, exited_at)


def run(body: str, settings: dict[str, Any], tmp_path: Path, timeout: float = 60) -> Run:
    return finish(start(body, settings, tmp_path), timeout)


def logged_total(lines: list[str], pattern: str) -> int:
    """The sum of the counts that ``pattern``'s group finds in log lines (a burst is logged
    as a first line and a summary)."""
    return sum(int(m.group(1)) for m in (re.search(pattern, line) for line in lines) if m)


def posts(receiver: SegmentReceiver) -> list[ReceivedRequest]:
    return [r for r in receiver.requests if r.path == "/v1/batch"]


def gaps(requests: list[ReceivedRequest]) -> list[float]:
    times = [r.received_at for r in requests]
    return [b - a for a, b in itertools.pairwise(times)]


def balanced(stats: dict[str, int]) -> bool:
    settled = sum(
        stats[k] for k in ("delivered", "stored", "failed", "dropped", "spooled", "blocked", "deferred")
    )
    return stats["queued"] == settled


@pytest.fixture
def base(receiver: SegmentReceiver, tmp_path: Path) -> dict[str, Any]:
    return {
        "write_key": WRITE_KEY,
        "host": receiver.url,
        "local_store": str(tmp_path / "store.sqlite3"),
        "flush_interval": 0.05,
    }


# ---------------------------------------------------------------------- batching
def test_flush_at_is_the_batch_size(receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path) -> None:
    body = """
    for i in range(7):
        t.track("Batched", {"i": i})
    assert segment_middleware.flush(10)
    report()
    """
    result = run(body, {**base, "flush_at": 3, "flush_interval": 30}, tmp_path)
    assert [len(b["batch"]) for b in receiver.batches] == [3, 3, 1]
    assert sorted(m["properties"]["i"] for m in receiver.messages) == list(range(7))
    assert result.stats["delivered"] == 7 and balanced(result.stats)


@pytest.mark.parametrize(("interval", "sent_unflushed"), [(0.3, True), (30, False)])
def test_flush_interval_sends_without_a_flush(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path, interval: float, sent_unflushed: bool
) -> None:
    body = """
    t.track("Waiting")
    started = time.monotonic()
    while segment_middleware.stats()["delivered"] < 1 and time.monotonic() - started < 2.5:
        time.sleep(0.02)
    report(waited=time.monotonic() - started)
    """
    result = run(body, {**base, "flush_interval": interval}, tmp_path)
    assert (result.stats["delivered"] == 1) is sent_unflushed
    if sent_unflushed:
        assert result.result["waited"] < 2.5
    assert [m["event"] for m in receiver.messages] == ["Waiting"], "the exit flush sends the rest"


# ---------------------------------------------------------------------- bounds
def test_max_queue_size_without_spool_drops_count_and_log_once_per_burst(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path
) -> None:
    body = """
    for i in range(12):
        t.track("Burst", {"i": i})
    report()
    assert segment_middleware.flush(10)
    """
    result = run(body, {**base, "max_queue_size": 5, "flush_interval": 60, "spool": False}, tmp_path)
    assert result.stats["queued"] == 12 and result.stats["dropped"] == 7
    assert sorted(m["properties"]["i"] for m in receiver.messages) == [0, 1, 2, 3, 4]
    drops = [line for line in result.log if "segment: dropped" in line]
    assert 1 <= len(drops) <= 2, drops  # the first drop at once, the rest of the burst as one summary
    assert logged_total(drops, r"dropped (\d+) message") == 7
    assert all("MAX_QUEUE_SIZE" in line for line in drops)


def test_max_queue_size_overflows_to_the_spool_and_all_arrive(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path
) -> None:
    body = """
    for i in range(12):
        t.track("Burst", {"i": i})
    assert segment_middleware.flush(10)
    report()
    """
    result = run(body, {**base, "max_queue_size": 5, "flush_interval": 60}, tmp_path)
    assert result.stats["queued"] == 12 and result.stats["dropped"] == 0 and balanced(result.stats)
    assert result.stats["deferred"] == 7, "what the queue could not hold went to disk"
    got = receiver.wait_for(12, timeout=15)  # the sender drains them by itself, or at exit
    assert sorted(m["properties"]["i"] for m in got) == list(range(12))
    assert not [line for line in result.log if "segment: dropped" in line]


# ---------------------------------------------------------------------- retries
@pytest.mark.parametrize("max_retries", [0, 4])
def test_max_retries_and_the_backoff_schedule(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path, max_retries: int
) -> None:
    """First retry at once, then 0.5 s doubling (+ up to 10% jitter); then the spool."""
    receiver.fail_with(500)
    body = """
    t.track("Failing", {"note": "personal-note"})
    assert segment_middleware.flush(30)
    report()
    """
    result = run(body, {**base, "max_retries": max_retries, "timeout": 2}, tmp_path)
    attempts = posts(receiver)
    assert len(attempts) == max_retries + 1
    assert [r.headers.get("X-Retry-Count") for r in attempts] == [None] + [
        str(n) for n in range(1, max_retries + 1)
    ]
    floors = [0.0, 0.5, 1.0, 2.0][:max_retries]
    for gap, floor in zip(gaps(attempts), floors, strict=True):
        assert floor * 0.95 <= gap <= floor * 1.1 + (0.6 if floor == 0 else 1.0), (gaps(attempts), floors)
    assert result.stats["spooled"] == 1 and result.stats["retried"] == (1 if max_retries else 0)
    spool_lines = [line for line in result.log if "not delivered" in line]
    assert len(spool_lines) == 1 and "1 message(s) not delivered" in spool_lines[0]
    assert base["local_store"] in spool_lines[0] and "personal-note" not in result.log_text()
    assert [m["properties"]["note"] for m in stored(Path(base["local_store"]))] == ["personal-note"]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_on_429_is_waited_and_not_counted(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path, form: str
) -> None:
    if form == "seconds":
        receiver.fail_with(429, times=1, retry_after=1)
    else:  # at least a second after the script's first post, whenever that comes
        receiver.fail_with(429, times=1, retry_after=email.utils.formatdate(time.time() + 3, usegmt=True))
    body = """
    t.track("Rate Limited")
    assert segment_middleware.flush(30)
    report()
    """
    result = run(body, {**base, "max_retries": 0}, tmp_path)
    attempts = posts(receiver)
    assert [r.status for r in attempts] == [429, 200], (
        "a 429 with Retry-After is retried even with no retries"
    )
    (gap,) = gaps(attempts)
    assert 0.95 <= gap <= 5.0, f"the retry came {gap:.2f} s after the 429"
    assert result.stats["delivered"] == 1 and result.stats["spooled"] == 0


def test_a_long_retry_after_does_not_hold_the_exit(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path
) -> None:
    receiver.fail_with(429, retry_after=3600)
    body = """
    t.track("Rate Limited")
    posting(1)  # the sender is in its post: the 429, then the wait for Retry-After
    """
    result = run(body, {**base, "shutdown_timeout": 1}, tmp_path)
    assert result.ended_at is not None and result.exited_at - result.ended_at < 4.0
    assert len(posts(receiver)) == 1
    assert [m["event"] for m in stored(Path(base["local_store"]))] == ["Rate Limited"]


def test_timeout_bounds_each_attempt(receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path) -> None:
    receiver.slow(4)
    body = """
    started = time.monotonic()
    t.track("Slow")
    assert segment_middleware.flush(30)
    report(took=time.monotonic() - started)
    """
    result = run(body, {**base, "timeout": 0.5, "max_retries": 0}, tmp_path)
    assert result.result["took"] < 2.5, "TIMEOUT=0.5 must not wait for a 4 s answer"
    assert result.stats["spooled"] == 1
    assert len(receiver.wait_for_requests(1, timeout=10)) == 1  # recorded once it was answered


@pytest.mark.parametrize("gzip", [False, True])
def test_gzip(receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path, gzip: bool) -> None:
    body = """
    t.track("Zipped", {"x": "é" * 50})
    assert segment_middleware.flush(10)
    report()
    """
    run(body, {**base, "gzip": gzip}, tmp_path)
    (post,) = posts(receiver)
    assert post.gzip is gzip and (post.headers.get("Content-Encoding") == "gzip") is gzip
    assert post.auth_ok and receiver.messages[0]["properties"] == {"x": "é" * 50}


# ---------------------------------------------------------------------- exit, spool, replay
@pytest.mark.parametrize("shutdown_timeout", [1.0, 3.0])
def test_shutdown_timeout_bounds_the_exit_and_spools_the_rest(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path, shutdown_timeout: float
) -> None:
    receiver.slow(30)
    body = """
    for i in range(3):
        t.track("At Exit", {"i": i})
    posting(1)  # one batch (FLUSH_AT=1) now waits on the endpoint, two are still queued
    """
    settings = {**base, "shutdown_timeout": shutdown_timeout, "timeout": 15, "flush_at": 1}
    result = run(body, settings, tmp_path)
    assert result.ended_at is not None
    exit_took = result.exited_at - result.ended_at
    assert shutdown_timeout * 0.5 <= exit_took <= shutdown_timeout + 3.0, exit_took
    assert sorted(m["properties"]["i"] for m in stored(Path(base["local_store"]))) == [0, 1, 2]
    assert logged_total(result.log, r"(\d+) message\(s\) not delivered") == 3, result.log


def test_spool_false_counts_failed_and_keeps_nothing(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path
) -> None:
    receiver.fail_with(500)
    body = """
    t.track("Lost On Purpose")
    assert segment_middleware.flush(10)
    report()
    """
    result = run(body, {**base, "spool": False, "max_retries": 0}, tmp_path)
    assert result.stats["failed"] == 1 and result.stats["spooled"] == 0 and balanced(result.stats)
    assert stored(Path(base["local_store"])) == []
    assert any("SPOOL is off" in line for line in result.log), result.log


@pytest.mark.parametrize("auto_replay", [False, True])
def test_auto_replay(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path, auto_replay: bool
) -> None:
    """The spooled First goes out by itself only with AUTO_REPLAY. The script waits for two
    of the sender's replay passes after the spool row exists (the second began after it
    for sure), so "not replayed" is seen, not guessed from a pause."""
    receiver.fail_with(500, times=1)  # the first post fails for good (no retries), the rest work
    body = """
    import threading
    import segment_middleware.sender as sender_module

    sender_module.REPLAY_EVERY = 0.05  # passes come quickly; the test counts them
    passed = threading.Event()
    replay_others = sender_module.Sender._replay_others

    def counted(self):
        replay_others(self)
        passed.set()

    sender_module.Sender._replay_others = counted
    t.track("First", {"n": 1})
    assert segment_middleware.flush(10)
    t.track("Second", {"n": 2})
    assert segment_middleware.flush(10)
    for _ in range(2):
        passed.clear()
        assert passed.wait(10), "no replay pass"
    report()
    """
    result = run(body, {**base, "max_retries": 0, "auto_replay": auto_replay}, tmp_path)
    # A pass posts what it replays before it returns: by the report, First is in or never.
    events = sorted(m["event"] for m in receiver.messages)
    assert events == (["First", "Second"] if auto_replay else ["Second"])
    assert all(len(v) == 1 for v in receiver.by_message_id().values())
    assert result.stats["spooled"] == 1 and result.stats["delivered"] == 1


# ---------------------------------------------------------------------- poison messages
def test_oversize_message_is_logged_by_type_and_id_only(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path
) -> None:
    body = """
    t.track("Small", {"n": 1})
    t.track("Huge", {"blob": "PERSONAL" + "x" * 40000}, message_id="big-1")
    t.track("Small", {"n": 2})
    assert segment_middleware.flush(10)
    report()
    """
    result = run(body, base, tmp_path)
    assert sorted(m["properties"]["n"] for m in receiver.messages) == [1, 2]
    assert result.stats["failed"] == 1 and result.stats["delivered"] == 2
    (line,) = [line for line in result.log if "32 KB" in line]
    assert "track" in line and "big-1" in line and "PERSONAL" not in result.log_text()


def test_rejected_message_is_logged_by_type_and_id_only(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path
) -> None:
    receiver.reject_messages(lambda m: m.get("messageId") == "bad-1")
    body = """
    for i in range(5):
        t.track("Fine", {"i": i})
    t.identify(traits={"email": "PERSONAL@example.com"}, message_id="bad-1")
    assert segment_middleware.flush(10)
    report()
    """
    result = run(body, {**base, "flush_interval": 30}, tmp_path)
    assert sorted(m["properties"]["i"] for m in receiver.messages) == [0, 1, 2, 3, 4]
    assert result.stats["failed"] == 1 and result.stats["delivered"] == 5
    (line,) = [line for line in result.log if "rejected" in line]
    assert "identify" in line and "bad-1" in line and "PERSONAL" not in result.log_text()
    assert line.endswith("is invalid; batch rejected"), "the endpoint's own reason"


def test_ashutdown_delivers_without_blocking_the_loop(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path
) -> None:
    receiver.slow(1.0, times=1)
    body = """
    import asyncio

    async def main():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        t.track("Before Exit")
        await segment_middleware.ashutdown(5)
        done.set()
        await task
        return ticks

    report(ticks=asyncio.run(main()))
    """
    result = run(body, base, tmp_path)
    assert result.stats["delivered"] == 1 and [m["event"] for m in receiver.messages] == ["Before Exit"]
    assert result.result["ticks"] >= 30, "the event loop kept running while the slow endpoint answered"


# ---------------------------------------------------------------------- the HTTP client's environment
def test_an_http_proxy_from_the_environment_is_used(
    receiver: SegmentReceiver, base: dict[str, Any], tmp_path: Path
) -> None:
    """HTTP_PROXY reaches the endpoint through the proxy, as the SDK's requests session would.
    The endpoint itself is a closed port; only the proxy (the receiver) can answer."""
    body = """
    t.track("Through The Proxy")
    assert segment_middleware.flush(10)
    report()
    """
    proxy_env = {"HTTP_PROXY": receiver.url, "http_proxy": receiver.url, "NO_PROXY": "", "no_proxy": ""}
    result = finish(start(body, {**base, "host": "http://127.0.0.1:9"}, tmp_path, env=proxy_env))
    assert result.stats["delivered"] == 1
    assert [m["event"] for m in receiver.messages] == ["Through The Proxy"]


@pytest.mark.parametrize("trusted", [True, False], ids=["ca-bundle-trusts-it", "default-bundle"])
def test_https_is_verified_with_the_sessions_ca_bundle(
    tls_receiver: tuple[SegmentReceiver, Path], tmp_path: Path, trusted: bool
) -> None:
    """The certificate is checked against what requests would use: REQUESTS_CA_BUNDLE when
    set, else its own bundle, where a self-signed certificate is refused (and spooled)."""
    receiver, cert = tls_receiver
    bundle = str(cert) if trusted else ""
    settings = {"write_key": WRITE_KEY, "host": receiver.url, "max_retries": 0}
    settings["local_store"] = str(tmp_path / "store.sqlite3")
    body = """
    t.track("Over TLS")
    assert segment_middleware.flush(10)
    report()
    """
    env = {"REQUESTS_CA_BUNDLE": bundle, "CURL_CA_BUNDLE": ""}
    result = finish(start(body, settings, tmp_path, env=env))
    if trusted:
        assert result.stats["delivered"] == 1 and [m["event"] for m in receiver.messages] == ["Over TLS"]
    else:
        assert result.stats["spooled"] == 1 and receiver.messages == []
