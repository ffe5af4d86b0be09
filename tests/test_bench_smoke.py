"""The benchmarks keep working: a quick run of each, checking delivery counts, not speed.

Speed is judged by reading the figures they print (see bench/README.md), never by a
timed test.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from servers import ROOT


def test_overhead_quick_run_delivers_everything(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overhead.py"), "--quick", "--rounds", "3", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {"inproc", "cpu", "gunicorn", "frameworks"} <= set(results)
    assert "delivery checks" in proc.stdout and "MISMATCH" not in proc.stdout
    assert results["inproc"]["rounds"] == 3  # --rounds reaches every in-process part
    for kind in ("flask", "starlette"):
        part = results["frameworks"][kind]
        assert "error" not in part, part
        assert set(part["stacks"]) == {"bare", "ours", "naive"}
        assert part["rounds"] == 3
        for stack in part["stacks"].values():
            assert 0 < stack["p50_us"] <= stack["p99_us"] < 1e6
            assert 0 < stack["median_round_mean_us"] < 1e5
            assert 0 < stack["median_round_cpu_us"] < 1e5
            assert len(stack["round_cpu_us"]) == part["rounds"]
        # every request of ours and naive arrived as exactly one page call, same path
        for stack in ("ours", "naive"):
            sent, got = part["sent"][stack], part["received"][stack]
            assert sent == 200 + part["rounds"] * part["per_round"]
            assert got["messages"] == got["message_ids"] == sent
            assert got["types"] == {"page": sent}
            assert part["delivered_ok"][stack] is True
        assert part["ours_stats"]["delivered"] == part["sent"]["ours"]
        assert part["sdk_errors"] == 0
        summary = results["summary"][kind]
        for view in ("cpu", "throughput", "request_p50"):
            assert {"bare", "ours_overhead", "naive_overhead", "ratio", "pass"} <= set(summary[view])
            assert summary[view]["naive_overhead"] > 0  # the SDK's page() inline is never free
        assert f"{kind:<9} in-process" in proc.stdout


# One sender that waits 0.5 s of backoff in every failed post (200 messages a second at
# most), and a queue of 1,000 (its rest settles within flush(15)): the queue overflows to
# disk however fast or slow this machine is. With the defaults, a busy machine's senders
# once spooled as fast as the requests queued.
MEMORY_ARGS = (
    "--requests",
    "40000",
    "--max-queue-size",
    "1000",
    "--max-in-flight",
    "1",
    "--max-retries",
    "2",
)


def test_memory_quick_run_stays_bounded(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "memory.py"), *MEMORY_ARGS, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    stats = results["after_flush"]
    assert results["bounded"] is True
    assert stats["queued"] == 40000
    assert stats["delivered"] == 0  # nothing listens on the endpoint
    on_disk = stats["spooled"] + stats["deferred"]
    assert stats["queued"] == stats["failed"] + stats["dropped"] + on_disk
    assert stats["deferred"] > 0, "a full queue overflows to disk"
    assert results["spool_rows"] == on_disk > 0


def test_delivery_bench_quick_run_receives_everything(tmp_path: Path) -> None:
    out = tmp_path / "delivery.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "delivery.py"), "--messages", "2000", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["ours"]["received"] == results["sdk"]["received"] == 2000
    assert results["ours"]["stats"]["delivered"] == 2000


def test_overflow_bench_quick_run_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "overflow.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overflow.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["ok"] is True, results["failures"]
    check = results["requests"]["overflow_check"]
    assert check["dropped_added"] == 0 and check["deferred_added"] == check["handed"] > 0
    assert all(r["received"] == r["messages"] for k in ("healthy", "slow") for r in results["throughput"][k])


def test_decompose_splits_request_thread_and_sender() -> None:
    """bench/decompose.py: with the queue on, the sender thread does the delivering (its CPU
    per message is above zero); with it off, no sender works at all."""
    figures = {}
    script = str(ROOT / "bench" / "decompose.py")
    for queue in ("on", "off"):
        proc = subprocess.run(
            [sys.executable, script, "starlette", "--rounds", "2", "--per-round", "500", "--queue", queue],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        line = next(x for x in proc.stdout.splitlines() if x.startswith("starlette"))
        figures[queue] = float(line.split("sender ", 1)[1].split(" ", 1)[0])
    assert figures["on"] > 0.5 and figures["off"] == 0.0, figures


@pytest.mark.parametrize(
    ("framework", "options", "heading"),
    [
        ("starlette", (), "starlette: "),
        ("flask", ("--server-io",), "flask, a socket round trip before each request: "),
    ],
)
def test_ab_variants_are_active_only_in_their_own_rounds(
    framework: str, options: tuple[str, ...], heading: str
) -> None:
    """bench/ab.py: the package's rounds post everything they queue, ``post-off``'s rounds
    post nothing, and every message is accounted for (delivered, none retried), in the
    plain loop and in the loop with a socket round trip per request (``--server-io``)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ab.py"),
            *(framework, "--variants", "post-off", "--rounds", "2", "--per-round", "1500", *options),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "\n" + heading in proc.stdout, proc.stdout[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    stats = ast.literal_eval(last.split("stats ", 1)[1].split("; ", 1)[0])
    received = int(last.rsplit("the receiver got ", 1)[1].split()[0])
    warm_up, per_stack = 1000, 2 * 1500
    assert received == warm_up + per_stack, last  # the package's rounds only
    assert stats["queued"] == stats["delivered"] == warm_up + 2 * per_stack, last
    assert stats["retried"] == 0 and stats["failed"] == 0, last
    assert "vs package" in proc.stdout and "OVERFLOWED" not in proc.stdout
    bare = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("bare "))
    assert "voluntary switches/1000" in bare and "system µs" in bare, bare


# The kernel's system time is sampled at clock ticks, so a short run's "system µs" can read
# 0 with the socket calls made: whether they are made is counted here instead.
_COUNT_SERVER_IO = '''
import socket, sys, tempfile
sys.path.insert(0, sys.argv[1])
calls = {"send": 0, "recv": 0}

class Counted:
    def __init__(self, sock):
        self.sock = sock
    def send(self, data):
        calls["send"] += 1
        return self.sock.send(data)
    def recv(self, size):
        calls["recv"] += 1
        return self.sock.recv(size)

real = socket.socketpair
socket.socketpair = lambda: tuple(Counted(end) for end in real())
import decompose
server_io = sys.argv[2] == "on"
store = tempfile.mkdtemp() + "/s.sqlite3"
run = decompose.loops("flask", "http://127.0.0.1:9", store, decompose.GCClock(), server_io)
run("bare", 25)
print(calls["send"], calls["recv"])
'''


@pytest.mark.parametrize(("server_io", "expected"), [("on", "25 25"), ("off", "0 0")])
def test_the_server_io_loop_makes_one_socket_round_trip_per_request(server_io: str, expected: str) -> None:
    """``decompose.loops(..., server_io=True)`` (``ab.py --server-io``): before each request
    one byte is written to a socket pair and read back; without it, no socket call."""
    proc = subprocess.run(
        [sys.executable, "-c", _COUNT_SERVER_IO, str(ROOT / "bench"), server_io],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[-2] == expected, proc.stdout[-1000:]
