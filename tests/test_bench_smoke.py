"""The four benchmarks keep working: a tiny run of each (``load.py`` in both its scenarios),
checking the delivery counts they report, never speed (speed is read from their figures,
see bench/README.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from servers import ROOT


def run_bench(script: str, tmp_path: Path, *args: str, timeout: float = 240) -> dict[str, Any]:
    out = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{script}.py"), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_overhead_delivers_one_page_call_per_request(tmp_path: Path) -> None:
    results = run_bench("overhead", tmp_path, "--rounds", "2", "--per-round", "100", "--warmup", "50")
    assert set(results["frameworks"]) == {"django", "flask", "starlette"}
    for fw, r in results["frameworks"].items():
        sent = 50 + 2 * 100
        assert r["sent"] == {"ours": sent, "naive": sent}, fw
        for stack in ("ours", "naive"):
            got = r["received"][stack]
            assert got["messages"] == got["message_ids"] == sent, (fw, stack, got)
            assert got["types"] == {"page": sent}, (fw, stack, got)
        assert r["ours_stats"]["delivered"] == sent and r["sdk_errors"] == 0, fw
        assert set(r["stacks"]) == {"bare", "ours", "naive"}
        assert all(v["cpu_us"] > 0 and v["p50_us"] > 0 for v in r["stacks"].values()), fw


@pytest.mark.parametrize("receiver", ["suite", "lean"])
def test_load_delivers_every_page_call_over_http_and_tls(tmp_path: Path, receiver: str) -> None:
    args = ("--rounds", "1", "--latency", "40", "--cpu", "40", "--warmup", "20", "--receiver", receiver)
    results = run_bench("load", tmp_path, *args, timeout=300)
    assert results["receiver"] == receiver and set(results["transports"]) == {"http", "tls"}
    for transport, t in results["transports"].items():
        for stack in ("ours+auth", "naive+auth"):
            sent, got = t["sent"][stack], t["received"][stack]
            assert sent >= 20 + 40 + 40, (transport, stack, sent)  # pre-roll requests add to it
            assert got["messages"] == got["message_ids"] == sent, (transport, stack, got)
            assert got["types"] == {"page": sent}, (transport, stack, got)
            assert got["kind"] == receiver, (transport, stack, got)  # the receiver asked for
        assert t["drain_timeouts"] == [], transport
        assert all(v["p99_us"] >= v["p50_us"] > 0 for v in t["stacks"].values()), transport


@pytest.mark.skipif(shutil.which("ab") is None, reason="ab missing (scripts/bench-deps: apache2-utils)")
def test_load_with_ab_delivers_every_page_call(tmp_path: Path) -> None:
    """``--client ab``: ApacheBench makes the requests; its counts feed the same delivery check."""
    args = ("--client", "ab", "--rounds", "1", "--latency", "40", "--cpu", "40", "--warmup", "20")
    results = run_bench("load", tmp_path, *args, "--transports", "http", timeout=300)
    assert results["client"] == "ab"
    t = results["transports"]["http"]
    for stack in ("ours+auth", "naive+auth"):
        sent, got = t["sent"][stack], t["received"][stack]
        assert sent >= 20 + 40 + 40 + 200, (stack, sent)  # the pre-roll: chunks of 200
        assert got["messages"] == got["message_ids"] == sent, (stack, got)
        assert got["types"] == {"page": sent}, (stack, got)
    assert all(v["p99_us"] >= v["p50_us"] > 0 for v in t["stacks"].values())
    # off-main: the CPU of the workers' threads that serve no request. Bare's workers have
    # none; ours' is read in clock ticks, too coarse for a bound at this size.
    assert all(x["other_threads_us"] == 0 for x in t["rounds"]["bare+auth"])


def test_cpu_seconds_tells_the_main_thread_from_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``load.py``'s off-main column rests on: CPU spent on another thread, even one
    that has exited, counts in the process's figure and not in its main thread's."""
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "bench" / "common.py")
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, common)  # its dataclasses look their module up
    spec.loader.exec_module(common)
    pid = os.getpid()
    assert threading.current_thread() is threading.main_thread()

    def burn() -> None:
        until = time.thread_time() + 0.3
        while time.thread_time() < until:
            pass

    total, main = common.cpu_seconds([pid]), common.cpu_seconds([pid], main_thread=True)
    worker = threading.Thread(target=burn)
    worker.start()
    worker.join()
    off_main = (common.cpu_seconds([pid]) - total) - (common.cpu_seconds([pid], main_thread=True) - main)
    assert off_main >= 0.2, off_main


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git history")
def test_load_before_runs_the_package_of_a_revision_beside_ours(tmp_path: Path) -> None:
    """``--before REV``: a fourth stack runs ours' app with the package of REV (the script
    exits 1 when its workers imported it from anywhere else), and its page calls arrive."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    args = ("--before", "HEAD", "--rounds", "1", "--latency", "30", "--cpu", "30", "--warmup", "10")
    results = run_bench("load", tmp_path, *args, "--transports", "http", timeout=300)
    assert results["before"] == head.stdout.strip()
    t = results["transports"]["http"]
    assert set(t["stacks"]) == {"bare+auth", "ours+auth", "naive+auth", "before+auth"}
    sent, got = t["sent"]["before+auth"], t["received"]["before+auth"]
    assert sent >= 10 + 30 + 30 and t["delivered_ok"]["before+auth"], (sent, got)
    assert got["messages"] == got["message_ids"] == sent


def test_load_collect_delivers_every_event_once_under_each_server(tmp_path: Path) -> None:
    servers = ("sync", "gthread", "uvicorn", "uvicorn-django")
    args = ("--scenario", "collect", "--rounds", "1", "--cpu", "40", "--warmup", "10", "--batch", "5")
    results = run_bench("load", tmp_path, *args, "--servers", ",".join(servers), timeout=300)
    assert set(results["servers"]) == set(servers)
    for kind, t in results["servers"].items():
        sent = (10 + 40) * (1 + 5)  # warm-up and round, each to v1/t (1 event) and v1/b (5)
        got = t["received"]
        assert t["sent"] == sent, (kind, t["sent"])
        assert got["messages"] == got["message_ids"] == sent, (kind, got)
        assert got["types"] == {"track": sent}, (kind, got)  # no page call for the mount's requests
        assert got["paths"] == {"/products/blue-widget/": sent}, (kind, got)  # the browser's page
        assert t["drain_timeouts"] == [], kind
        assert set(t["endpoints"]) == {"noop", "v1/t", "v1/b"}, kind
        assert all(v["req_s"] > 0 for v in t["endpoints"].values()), kind
        assert t["endpoints"]["v1/b"]["events"] == 5, kind


def test_delivery_receives_every_message_from_both(tmp_path: Path) -> None:
    results = run_bench("delivery", tmp_path, "--messages", "2000")
    for kind in ("ours", "sdk"):
        assert results[kind]["received"] == results[kind]["message_ids"] == 2000, kind
    assert results["ours"]["stats"]["delivered"] == 2000


def test_outage_overflows_to_disk_and_drains_everything(tmp_path: Path) -> None:
    results = run_bench("outage", tmp_path, "--requests", "3000", "--max-queue-size", "500")
    at_end = results["stats"]["3000"]
    assert at_end["queued"] == 3000 and at_end["delivered"] == 0  # nothing listened
    # batches refused during the outage were spooled (a snapshot during the loop may come
    # before the writer has stored anything: read the figures after the drain)
    assert results["after_drain"]["spooled"] > 0, "the outage put messages on disk"
    assert results["replay"]["exit"] == 0, results["replay"]
    got, arrive = results["received"], 3000 - results["dropped"]  # a drop is counted, never sent
    assert got["messages"] == got["message_ids"] == arrive and got["types"] == {"page": arrive}
