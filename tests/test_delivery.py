"""The delivery pipeline against a real receiver: fork, bounds, accounting, spool, poison."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY, wait_until
from segment_receiver import SegmentReceiver

from segment_middleware.core import Runtime
from segment_middleware.settings import Settings
from segment_middleware.store import Store


def runtime(receiver: SegmentReceiver | None, store_path: str, **overrides: object) -> Runtime:
    base: dict[str, object] = {"local_store": store_path, "flush_interval": 0.05}
    if receiver is not None:
        base.update(write_key=WRITE_KEY, host=receiver.url)
    base.update(overrides)
    return Runtime(Settings.from_sources(base))


def balanced(stats: dict[str, int], pending: int = 0) -> bool:
    settled = sum(
        stats[k] for k in ("delivered", "stored", "failed", "dropped", "spooled", "blocked", "deferred")
    )
    return stats["queued"] == settled + pending


def test_forked_child_sends_its_own_and_never_the_parents(receiver: SegmentReceiver, store_path: str) -> None:
    rt = runtime(receiver, store_path, flush_interval=60)
    parent = rt.tracker(user_id="parent")
    for i in range(5):
        parent.track("Before Fork", {"i": i})
    pid = os.fork()
    if pid == 0:  # child: its own queue, thread and HTTP session
        code = 1
        try:
            child = rt.tracker(user_id="child")
            child.track("In Child")
            ok = rt.delivery.flush(10)
            s = rt.delivery.stats()
            code = 0 if ok and s["queued"] == 1 and s["delivered"] == 1 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert rt.delivery.flush(10)  # the parent's five are delivered; the child's one came before it exited
    msgs = receiver.wait_for(6)
    receiver.wait_answered()
    events = sorted((m["userId"], m["event"]) for m in receiver.messages)
    assert events == [("child", "In Child")] + [("parent", "Before Fork")] * 5
    assert all(len(v) == 1 for v in receiver.by_message_id().values())
    assert len(msgs) == 6


def test_full_queue_without_spool_drops_counts_and_logs_once_per_burst(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An unreachable endpoint and a long interval keep everything queued; SPOOL off: no disk.
    rt = runtime(
        None,
        store_path,
        write_key="k",
        host="http://127.0.0.1:9",
        max_queue_size=50,
        flush_interval=60,
        spool=False,
    )
    t = rt.tracker(anonymous_id="a")
    with caplog.at_level(logging.WARNING, logger="segment_middleware"):
        for _ in range(500):
            t.track("E")
    s = rt.delivery.stats()
    assert s["queued"] == 500 and s["dropped"] == 450
    assert rt.delivery.pending == 50
    assert balanced(s, pending=50)
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and "queue full" in drops[0].getMessage()
    rt.delivery.shutdown(0.2)  # SPOOL off: what is left fails, counted
    s = rt.delivery.stats()
    assert s["failed"] == 50 and balanced(s)
    assert not os.path.exists(store_path), "SPOOL off: nothing touched the disk"


def test_full_queue_defers_to_disk_and_the_sender_drains_it_oldest_first(
    receiver: SegmentReceiver, store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SPEC 7: past MAX_QUEUE_SIZE new messages go to the spool as deferred rows, nothing
    is dropped, and once the endpoint answers the sender sends them by itself, oldest first,
    after the live queue; no replay."""
    receiver.slow(1.0)  # every post waits: the queue fills while the senders wait
    rt = runtime(receiver, store_path, max_queue_size=50, flush_at=10, max_in_flight=1)
    t = rt.tracker(anonymous_id="a")
    with caplog.at_level(logging.WARNING, logger="segment_middleware"):
        for i in range(500):
            t.track("E", {"i": i})
            time.sleep(0.001)  # a busy site's pace, not a tight loop's
        assert rt.delivery.flush(30), "everything left memory: posted, or on disk"
    s = rt.delivery.stats()
    assert s["dropped"] == 0 and s["queued"] == 500 and balanced(s)
    assert s["deferred"] >= 400, s
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("segment: deferred")]
    assert said and "MAX_QUEUE_SIZE" in said[0], "the overflow is logged (once per burst)"
    deferred_ids = {r.message["properties"]["i"] for r in Store(store_path).events(kind="deferred")}
    assert len(deferred_ids) == s["deferred"]
    receiver.healthy()
    wait_until(lambda: rt.delivery.stats()["deferred"] == 0, "the deferred rows to drain", 30)
    got = receiver.wait_for(500, timeout=30)
    order = [m["properties"]["i"] for m in got]
    assert sorted(order) == list(range(500)), "each message once, none lost"
    drained = [i for i in order if i in deferred_ids]
    assert drained == sorted(drained), "deferred rows go out oldest first"
    assert order.index(drained[0]) > max(order.index(i) for i in range(500) if i not in deferred_ids) - 10
    s = rt.delivery.stats()
    assert s["delivered"] == 500 and s["deferred"] == 0 and balanced(s)
    assert not Store(store_path).events(kind="deferred", pending_only=True)


def test_a_tight_loop_faster_than_the_disk_loses_nothing(receiver: SegmentReceiver, store_path: str) -> None:
    """SPEC 7: only SPOOL_MAX_MB drops. A loop that queues faster than the overflow writer
    can store (no pause between calls, a handoff of 100) fills the handoff; the caller
    then writes it itself, so every message is deferred, none dropped."""
    receiver.refuse()
    rt = runtime(receiver, store_path, max_queue_size=20, flush_at=10, max_retries=0, flush_interval=60)
    assert rt.delivery.disk.limit == 100
    t = rt.tracker(anonymous_id="a")
    for i in range(3000):
        t.track("E", {"i": i})
    rt.delivery.shutdown(2.0)
    s = rt.delivery.stats()
    assert s["dropped"] == 0 and s["queued"] == 3000 and balanced(s), s
    on_disk = Store(store_path).events(kind="deferred") + Store(store_path).events(kind="spool")
    assert sorted(r.message["properties"]["i"] for r in on_disk) == list(range(3000 - s["delivered"]))


def test_an_event_loop_never_writes_the_overflow_itself(
    receiver: SegmentReceiver, store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The async adapters never block the loop on the disk: with the handoff full, a call
    made on an event loop's thread is dropped, counted and logged, not written there."""
    import asyncio

    receiver.refuse()
    rt = runtime(receiver, store_path, max_queue_size=20, flush_at=10, max_retries=0, flush_interval=60)
    t = rt.tracker(anonymous_id="a")
    written: list[int] = []
    disk_write = rt.delivery.disk.write

    def record(items: list[Any]) -> None:
        written.append(len(items))
        disk_write(items)

    async def burst() -> None:
        rt.delivery.disk.write = record  # type: ignore[method-assign]
        for i in range(3000):
            t.track("E", {"i": i})

    with caplog.at_level(logging.WARNING, logger="segment_middleware"):
        asyncio.run(burst())
        rt.delivery.shutdown(2.0)
    s = rt.delivery.stats()
    assert s["dropped"] > 0 and s["queued"] == 3000 and balanced(s), s
    assert any("dropped" in r.getMessage() and "event loop" in r.getMessage() for r in caplog.records)
    assert all(n <= rt.delivery.disk.limit for n in written), "only the writer thread's bursts were written"


def test_deferred_rows_left_at_exit_are_sent_by_the_next_process(
    receiver: SegmentReceiver, store_path: str
) -> None:
    receiver.refuse()
    rt = runtime(receiver, store_path, max_queue_size=20, flush_at=10, max_retries=0, flush_interval=60)
    t = rt.tracker(anonymous_id="a")
    for i in range(100):
        t.track("E", {"i": i})
    rt.delivery.shutdown(1.0)
    s = rt.delivery.stats()
    assert s["dropped"] == 0 and s["deferred"] + s["spooled"] + s["delivered"] == 100 and balanced(s)
    left = Store(store_path).events(kind="deferred", pending_only=True)
    assert len(left) == s["deferred"] > 0
    assert all(row.replayed_at is None for row in left), "handed over: unclaimed"
    receiver.healthy()
    # Two new processes (same store, as two workers) find them within REPLAY_EVERY of their
    # first send; rows are claimed, so each row is sent by one of them only.
    code = f"""
import sys, time
from segment_middleware.core import Runtime
from segment_middleware.settings import Settings
from segment_middleware.store import Store
settings = Settings(write_key={WRITE_KEY!r}, host={receiver.url!r}, local_store={store_path!r}, flush_at=5)
rt = Runtime(settings.replace(flush_interval=0.05))
rt.tracker(anonymous_id=sys.argv[1]).track("Next")
assert rt.delivery.flush(10)
deadline = time.monotonic() + 20
while Store({store_path!r}).events(kind="deferred", pending_only=True) and time.monotonic() < deadline:
    time.sleep(0.1)
rt.delivery.shutdown(5)
"""
    workers = [subprocess.Popen([sys.executable, "-c", code, name]) for name in ("b", "c")]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    got = receiver.wait_for(len(left) + 2, timeout=10)
    receiver.wait_answered()
    assert {m["properties"]["i"] for m in got if m["event"] == "E"} == {
        r.message["properties"]["i"] for r in left
    }
    assert len(receiver.messages) == len(left) + 2, "each row sent once, by one of the two"
    assert not Store(store_path).events(kind="deferred", pending_only=True)
    rt.delivery.shutdown(1.0)  # again, as at interpreter exit: the rows it handed over are not lost
    assert rt.delivery.stats() == s


def test_spool_max_mb_evicts_the_oldest_and_counts_them_dropped(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime(
        None,
        store_path,
        write_key="k",
        host="http://127.0.0.1:9",
        max_queue_size=10,
        flush_interval=60,
        spool_max_mb=0.05,  # ~52 KB: about 40 of the 1.2 KB messages below
    )
    t = rt.tracker(anonymous_id="a")
    try:
        with caplog.at_level(logging.WARNING, logger="segment_middleware"):
            for i in range(300):
                t.track("E", {"i": i, "pad": "x" * 1000})
                time.sleep(0.001)

            def settled() -> bool:
                """The writer is done: the queue is drained to the handoff's last burst, and
                the rows on disk are the ones the stats count (the writer evicts, then counts,
                so a look in between sees fewer rows than ``deferred``)."""
                deferred = rt.delivery.stats()["deferred"]
                on_disk = len(Store(store_path).events(kind="deferred"))
                return rt.delivery.pending <= 10 and on_disk == deferred

            wait_until(settled, "the overflow written, evicted and counted", 10)
        s = rt.delivery.stats()
        assert s["dropped"] > 0 and balanced(s, pending=rt.delivery.pending)
        rows = Store(store_path).events(kind="deferred")
        assert len(rows) == s["deferred"]
        # Each process measures the spool once per twentieth of the bound it wrote.
        assert sum(len(r.body.encode()) for r in rows) <= 1.05 * 0.05 * 1024 * 1024
        kept = sorted(r.message["properties"]["i"] for r in rows)
        assert kept == list(range(kept[0], kept[0] + len(kept))) and kept[-1] >= 250, "the oldest went"
        logged = [r.getMessage() for r in caplog.records if "SPOOL_MAX_MB" in r.getMessage()]
        assert logged and "dropped" in logged[0]
    finally:
        rt.delivery.shutdown(0.2)


def test_no_write_key_overflow_goes_to_the_local_store(store_path: str) -> None:
    rt = runtime(None, store_path, max_queue_size=5, flush_interval=60)
    t = rt.tracker(anonymous_id="a")
    for i in range(200):
        t.track("E", {"i": i})
    assert rt.delivery.flush(10)
    s = rt.delivery.stats()
    assert s["stored"] == 200 and s["delivered"] == 0  # written to the store: not delivered anywhere
    assert s["dropped"] == 0 and s["deferred"] == 0 and balanced(s)
    assert sorted(r.message["properties"]["i"] for r in Store(store_path).events(kind="local")) == list(
        range(200)
    )


@pytest.mark.parametrize("max_in_flight", [1, 3])
def test_max_in_flight_posts_at_once_to_a_slow_endpoint(
    receiver: SegmentReceiver, store_path: str, max_in_flight: int
) -> None:
    """Six batches to an endpoint that answers each after 1 s: one connection takes 6 s
    or more, three take about 2 s (never less than 2: no more than three at once)."""
    receiver.slow(1.0)
    rt = runtime(
        receiver, store_path, max_queue_size=60, flush_at=10, flush_interval=60, max_in_flight=max_in_flight
    )
    t = rt.tracker(anonymous_id="a")
    started = time.monotonic()
    for i in range(60):
        t.track("E", {"i": i})
    assert rt.delivery.flush(30)
    took = time.monotonic() - started
    s = rt.delivery.stats()
    assert s["delivered"] == 60 and balanced(s)
    if max_in_flight == 1:
        assert took >= 5.9
    else:
        assert 1.9 <= took < 4.5, took
    assert sorted(m["properties"]["i"] for m in receiver.messages) == list(range(60))


def test_outage_spools_and_replay_sends_original_ids(receiver: SegmentReceiver, store_path: str) -> None:
    rt = runtime(receiver, store_path, max_retries=1)
    receiver.fail_with(503)
    t = rt.tracker(user_id="u1")
    for i in range(3):
        t.track("During Outage", {"i": i})
    assert rt.delivery.flush(10)
    s = rt.delivery.stats()
    assert s["spooled"] == 3 and s["delivered"] == 0 and s["retried"] == 3 and balanced(s)
    spooled = Store(store_path).events(kind="spool")
    assert {r.message["properties"]["i"] for r in spooled} == {0, 1, 2}
    receiver.healthy()
    from segment_middleware.cli import main

    assert main(["--store", store_path, "replay", "--write-key", WRITE_KEY, "--host", receiver.url]) == 0
    got = receiver.wait_for(3)
    assert sorted(m["messageId"] for m in got) == sorted(r.message_id for r in spooled)
    assert main(["--store", store_path, "replay", "--write-key", WRITE_KEY, "--host", receiver.url]) == 0
    receiver.wait_answered()  # replay returned: whatever it posted is recorded
    assert len(receiver.messages) == 3


def test_one_rejected_message_does_not_block_its_batch(
    receiver: SegmentReceiver, store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime(receiver, store_path, flush_interval=60)
    receiver.reject_messages(lambda m: m.get("properties", {}).get("poison") is True)
    t = rt.tracker(user_id="u")
    for i in range(10):
        t.track("E", {"i": i, "poison": i == 6, "secret_note": "do-not-log"})
    with caplog.at_level(logging.ERROR, logger="segment_middleware"):
        assert rt.delivery.flush(10)
    got = receiver.wait_for(9)
    assert sorted(m["properties"]["i"] for m in got) == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    posted = [tuple(m["messageId"] for m in r.body["batch"]) for r in receiver.requests if r.body]
    assert len(posted) == len(set(posted)), "each split half is posted once"
    s = rt.delivery.stats()
    assert s["delivered"] == 9 and s["failed"] == 1 and balanced(s)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "rejected" in text and "do-not-log" not in text
    (line,) = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "a track message" in line, "the log line names the message's type"
    assert line.endswith("is invalid; batch rejected"), "and gives the endpoint's own reason"


def test_oversize_message_is_dropped_alone(receiver: SegmentReceiver, store_path: str) -> None:
    rt = runtime(receiver, store_path)
    t = rt.tracker(user_id="u")
    t.track("Small", {"n": 1})
    t.track("Huge", {"blob": "x" * 40_000})
    t.track("Small", {"n": 2})
    assert rt.delivery.flush(10)
    got = receiver.wait_for(2)
    assert [m["event"] for m in got] == ["Small", "Small"]
    s = rt.delivery.stats()
    assert s["failed"] == 1 and s["delivered"] == 2 and balanced(s)


def test_before_send_can_enrich_and_drop(receiver: SegmentReceiver, store_path: str) -> None:
    def hook(msg: dict) -> dict | None:
        if msg.get("event") == "Drop Me":
            return None
        msg.setdefault("properties", {})["enriched"] = True
        return msg

    rt = runtime(receiver, store_path, before_send=[hook], integrations={"All": True, "Mixpanel": False})
    t = rt.tracker(user_id="u")
    t.track("Keep")
    t.track("Drop Me")
    t.track("Override", integrations={"Mixpanel": True})
    assert rt.delivery.flush(10)
    got = receiver.wait_for(2)
    assert [m["event"] for m in got] == ["Keep", "Override"]
    assert all(m["properties"]["enriched"] for m in got)
    assert got[0]["integrations"] == {"All": True, "Mixpanel": False}
    assert got[1]["integrations"] == {"All": True, "Mixpanel": True}
    s = rt.delivery.stats()
    assert s["dropped"] == 1 and balanced(s)


def test_shutdown_is_bounded_with_a_slow_endpoint(receiver: SegmentReceiver, store_path: str) -> None:
    rt = runtime(receiver, store_path, timeout=10, shutdown_timeout=1.0, flush_interval=60)
    receiver.slow(5)
    t = rt.tracker(user_id="u")
    for i in range(5):
        t.track("E", {"i": i})
    start = time.monotonic()
    rt.delivery.shutdown()
    took = time.monotonic() - start
    assert took < 1.6
    s = rt.delivery.stats()
    assert s["spooled"] == 5 and balanced(s), s  # the stats say where the five went, if not
    assert len(Store(store_path).events(kind="spool")) == 5


def test_no_write_key_goes_to_the_store(store_path: str) -> None:
    rt = runtime(None, store_path)
    rt.tracker(user_id="u").track("Local", {"a": 1})
    assert rt.delivery.flush(5)
    (row,) = Store(store_path).events()
    assert row.kind == "local" and row.event == "Local" and row.message["properties"] == {"a": 1}
    assert Path(store_path).exists()


def test_write_key_never_logged(
    receiver: SegmentReceiver, store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime(receiver, store_path, max_retries=1)
    receiver.fail_with(401)
    with caplog.at_level(logging.DEBUG):
        rt.tracker(user_id="u").track("E")
        assert rt.delivery.flush(10)
    assert caplog.records
    assert WRITE_KEY not in caplog.text


def test_auto_replay_sends_spool_once_endpoint_recovers(
    receiver: SegmentReceiver, store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segment_middleware.sender as sender_module

    rt = runtime(receiver, store_path, max_retries=0, auto_replay=True)
    receiver.fail_with(500)
    t = rt.tracker(user_id="u")
    for i in range(4):
        t.track("Spooled", {"i": i})
    assert rt.delivery.flush(10)
    spooled = Store(store_path).events(kind="spool")
    assert len(spooled) == 4 and receiver.messages == []
    receiver.healthy()
    monkeypatch.setattr(sender_module, "REPLAY_EVERY", 0.0)  # replay at the next look
    t.track("Fresh")
    got = receiver.wait_for(5, timeout=10)
    monkeypatch.undo()
    assert sorted(m["messageId"] for m in got if m["event"] == "Spooled") == sorted(
        r.message_id for r in spooled
    )
    wait_until(
        lambda: all(r.replayed_at and r.replayed_at > 0 for r in Store(store_path).events(kind="spool")),
        "the replayed rows to be marked",
        10,
    )
    assert rt.delivery.flush(5)
    receiver.wait_answered()
    assert len(receiver.messages) == 5


def test_auto_replay_sets_aside_a_rejected_row_and_sends_the_rest(
    receiver: SegmentReceiver, store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segment_middleware.sender as sender_module

    rt = runtime(receiver, store_path, max_retries=0, auto_replay=True)
    receiver.fail_with(500)
    t = rt.tracker(user_id="u")
    for i in range(6):
        t.track("Spooled", {"i": i})
    assert rt.delivery.flush(10)
    assert len(Store(store_path).events(kind="spool")) == 6 and receiver.messages == []
    receiver.healthy()
    receiver.reject_messages(lambda m: (m.get("properties") or {}).get("i") == 3)
    monkeypatch.setattr(sender_module, "REPLAY_EVERY", 0.0)  # replay at the next look
    t.track("Fresh")
    got = receiver.wait_for(6, timeout=10)
    monkeypatch.undo()
    assert sorted(m["properties"]["i"] for m in got if m.get("event") == "Spooled") == [0, 1, 2, 4, 5]

    # The receiver has them before the sender marks the rows: wait for the marks.
    def rows_now() -> dict[int, Any]:
        return {r.message["properties"]["i"]: r for r in Store(store_path).events(kind="spool")}

    wait_until(lambda: all(r.replayed_at for r in rows_now().values()), "the rows to be marked", 10)
    rows = rows_now()
    assert rows[3].error and "rejected" in rows[3].error
    assert all(rows[i].replayed_at and rows[i].replayed_at > 0 for i in (0, 1, 2, 4, 5))


def test_concurrent_replays_never_send_a_row_twice(receiver: SegmentReceiver, store_path: str) -> None:
    import threading

    from segment_middleware.cli import main

    rt = runtime(None, store_path)
    t = rt.tracker(user_id="u")
    for i in range(450):
        t.track("Local", {"i": i})
    assert rt.delivery.flush(10)
    argv = ["--store", store_path, "replay", "--write-key", WRITE_KEY, "--host", receiver.url]
    threads = [threading.Thread(target=main, args=(argv,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    receiver.wait_for(450)
    receiver.wait_answered()  # every replay has returned: nothing more is on its way
    assert sorted(m["properties"]["i"] for m in receiver.messages) == list(range(450))


def test_batches_are_gzipped_authenticated_and_retry_counted(
    receiver: SegmentReceiver, store_path: str
) -> None:
    rt = runtime(receiver, store_path, gzip=True, max_retries=3)
    receiver.fail_with(500, times=2)
    rt.tracker(user_id="u").track("Zipped", {"x": "é"})
    assert rt.delivery.flush(15)
    (msg,) = receiver.wait_for(1)
    assert msg["properties"] == {"x": "é"}
    accepted = [r for r in receiver.requests if r.status == 200]
    assert accepted and accepted[-1].gzip and accepted[-1].auth_ok
    assert accepted[-1].headers.get("X-Retry-Count") == "2"
    assert "segment-middleware/" in accepted[-1].headers.get("User-Agent", "")
    assert rt.delivery.stats()["retried"] == 1


def test_non_retryable_status_is_not_retried(receiver: SegmentReceiver, store_path: str) -> None:
    rt = runtime(receiver, store_path, max_retries=5)
    receiver.fail_with(401)
    rt.tracker(user_id="u").track("E")
    assert rt.delivery.flush(10)
    assert len([r for r in receiver.requests if r.path == "/v1/batch"]) == 1
    assert rt.delivery.stats()["spooled"] == 1


def test_sender_wakes_for_ten_full_batches_not_each_one(receiver: SegmentReceiver, store_path: str) -> None:
    """Under load the sender is woken once per 10 full batches (FLUSH_INTERVAL still bounds
    the wait); every post still carries FLUSH_AT messages."""
    rt = runtime(receiver, store_path, flush_interval=30, flush_at=5)
    tracker = rt.tracker(user_id="u")
    for i in range(49):  # 9 full batches: below the wake mark, nothing is sent yet
        tracker.track("Queued", {"i": i})
    # The sender waits on this event for up to FLUSH_INTERVAL (30 s): unset, it sends nothing.
    assert not rt.delivery.signals.wake.is_set() and receiver.messages == []
    tracker.track("Queued", {"i": 49})  # the 10th full batch wakes the sender
    assert len(receiver.wait_for(50, timeout=10)) == 50
    assert [len(body["batch"]) for body in receiver.batches] == [5] * 10
    assert rt.delivery.flush(5)  # the last answer may still be on its way to the sender
    assert balanced(rt.delivery.stats())
    rt.delivery.shutdown(2)


def test_a_small_queue_wakes_the_sender_at_half_full(receiver: SegmentReceiver, store_path: str) -> None:
    """MAX_QUEUE_SIZE below 10 batches: woken at half of it, so nothing is dropped waiting."""
    rt = runtime(receiver, store_path, flush_interval=30, flush_at=10, max_queue_size=40)
    tracker = rt.tracker(user_id="u")
    for i in range(20):
        tracker.track("Queued", {"i": i})
    assert len(receiver.wait_for(20, timeout=10)) == 20
    assert rt.delivery.stats()["dropped"] == 0
    rt.delivery.shutdown(2)


def test_flush_interval_bounds_the_wait_under_the_wake_mark(
    receiver: SegmentReceiver, store_path: str
) -> None:
    """Fewer messages than the wake mark still leave within about FLUSH_INTERVAL, unflushed."""
    rt = runtime(receiver, store_path, flush_interval=0.3, flush_at=100)
    tracker = rt.tracker(user_id="u")
    started = time.monotonic()
    for i in range(30):
        tracker.track("Queued", {"i": i})
    assert len(receiver.wait_for(30, timeout=5)) == 30
    assert time.monotonic() - started < 2.0
    rt.delivery.shutdown(2)


def test_backoff_schedule_is_the_sdks() -> None:
    """First retry at once, then 0.5 s doubling with up to 10% jitter, capped at 60 s."""
    from segment_middleware.http import backoff_delay

    for _ in range(50):
        assert backoff_delay(1) == 0.0
        for attempt, base in ((2, 0.5), (3, 1.0), (4, 2.0), (5, 4.0), (8, 32.0)):
            assert base <= backoff_delay(attempt) <= base * 1.1
        assert backoff_delay(9) == 60.0 and backoff_delay(30) == 60.0


def test_retryable_statuses_are_the_sdks() -> None:
    """408, 410, 429, 460 and every 5xx but 501, 505 and 511: as the SDK's Consumer decides."""
    from segment_middleware.http import retryable

    assert [s for s in range(100, 600) if retryable(s)] == [408, 410, 429, 460] + [
        s for s in range(500, 600) if s not in (501, 505, 511)
    ]


def test_importing_the_package_changes_nothing_in_the_process(tmp_path: Path) -> None:
    """Process hooks come with the first runtime, once: not at import, not per runtime."""
    script = f"""
import atexit, logging, signal
before = atexit._ncallbacks()
import segment_middleware, segment_middleware.core, segment_middleware.delivery, segment_middleware.wsgi
assert logging.getLogger("segment").filters == [], "a log filter at import"
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "a SIGTERM handler at import"
assert atexit._ncallbacks() == before, "an exit hook at import"
from segment_middleware.core import Runtime
from segment_middleware.settings import Settings
first = Runtime(Settings(local_store={str(tmp_path / "a.db")!r}))
handler, hooks = signal.getsignal(signal.SIGTERM), atexit._ncallbacks()
assert handler is not signal.SIG_DFL and hooks > before and len(logging.getLogger("segment").filters) == 1
second = Runtime(Settings(local_store={str(tmp_path / "b.db")!r}))
assert signal.getsignal(signal.SIGTERM) is handler and atexit._ncallbacks() == hooks
assert len(logging.getLogger("segment").filters) == 1
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_forked_child_does_no_work_until_it_sends(receiver: SegmentReceiver, store_path: str) -> None:
    """Nothing runs at fork time but a counter: the child renews its queue and HTTP session
    on its first message, after the server's own set-up (gunicorn's signal handlers)."""
    from segment.analytics import request as sdk_request

    rt = runtime(receiver, store_path, flush_interval=60)
    rt.tracker(user_id="parent").track("Before Fork")
    parent_session = sdk_request._session
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            untouched = sdk_request._session is parent_session
            rt.tracker(user_id="child").track("In Child")
            renewed = sdk_request._session is not parent_session
            sent = rt.delivery.flush(10) and rt.delivery.stats()["delivered"] == 1
            code = 0 if (untouched and renewed and sent) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert rt.delivery.flush(10)
    assert sorted(m["event"] for m in receiver.wait_for(2)) == ["Before Fork", "In Child"]


@pytest.mark.parametrize("with_key", [False, True], ids=["local-store", "spool"])
def test_a_store_that_cannot_be_written_counts_failed_and_logs(
    receiver: SegmentReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture, with_key: bool
) -> None:
    """No key and an unwritable LOCAL_STORE, or an outage and an unwritable spool: every
    message is accounted for as failed, logged with the count, and flush() still returns."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    bad_store = str(blocker / "events.sqlite3")
    if with_key:
        receiver.fail_with(500)
    rt = runtime(receiver if with_key else None, bad_store, max_retries=0)
    tracker = rt.tracker(user_id="u")
    with caplog.at_level(logging.ERROR, logger="segment_middleware"):
        tracker.track("Lost")
        tracker.track("Lost")
        assert rt.delivery.flush(10)
    stats = rt.delivery.stats()
    assert stats["failed"] == 2 and stats["queued"] == 2 and balanced(stats)
    wanted = "not spooled" if with_key else "could not write 2 message(s) to the local store"
    assert wanted in caplog.text and ("2 message(s)" in caplog.text)
    rt.delivery.shutdown(1)


def test_each_sender_honours_retry_after_on_its_own_connection(
    receiver: SegmentReceiver, store_path: str
) -> None:
    """Three batches in flight at once (the endpoint slow), each answered 429 with
    Retry-After: 1; each sender waits before its retry, and every message arrives once."""
    receiver.slow(0.5, times=3)
    receiver.fail_with(429, times=3, retry_after=1)
    rt = runtime(receiver, store_path, max_queue_size=60, flush_at=10, flush_interval=60, max_in_flight=3)
    t = rt.tracker(anonymous_id="a")
    started = time.monotonic()
    for i in range(60):
        t.track("E", {"i": i})
    assert rt.delivery.flush(30)
    s = rt.delivery.stats()
    assert s["delivered"] == 60 and balanced(s)
    posts = [r for r in receiver.requests if r.path == "/v1/batch"]
    limited = [r for r in posts if r.status == 429]
    retries = [r for r in posts if "X-Retry-Count" in r.headers]
    assert len(limited) == 3 and len(retries) == 3 and s["retried"] == 30
    assert all(r.received_at - started >= 1.4 for r in retries), "a retry came before its Retry-After"
    assert sorted(m["properties"]["i"] for m in receiver.messages) == list(range(60))


def test_deferred_rows_drain_after_an_outage_without_new_traffic(
    receiver: SegmentReceiver, store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint was down when the overflow was written, and no request comes after it
    is back: the sender tries again by itself (every REPLAY_EVERY) and drains the rows."""
    import segment_middleware.sender as sender_module

    monkeypatch.setattr(sender_module, "REPLAY_EVERY", 0.3)
    receiver.slow(0.5)  # posts wait, so the queue fills; then fail
    receiver.fail_with(503)
    rt = runtime(receiver, store_path, max_queue_size=20, flush_at=10, max_retries=0)
    t = rt.tracker(anonymous_id="a")
    for i in range(100):
        t.track("E", {"i": i})
        time.sleep(0.001)
    assert rt.delivery.flush(10)
    held = rt.delivery.stats()["deferred"]
    assert held > 0 and rt.delivery.stats()["spooled"] > 0, "the live batches failed: the endpoint is down"
    receiver.healthy()
    wait_until(lambda: rt.delivery.stats()["deferred"] == 0, "the deferred rows to drain by themselves", 15)
    s = rt.delivery.stats()
    assert s["delivered"] == held and balanced(s)
    assert sorted(m["properties"]["i"] for m in receiver.wait_for(held)) == sorted(
        r.message["properties"]["i"] for r in Store(store_path).events(kind="deferred")
    )


def test_the_overflow_writer_ends_when_idle_and_comes_back(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segment_middleware.disk as disk_module

    monkeypatch.setattr(disk_module, "IDLE_EXIT", 0.05)
    rt = runtime(
        None, store_path, write_key="k", host="http://127.0.0.1:9", max_queue_size=5, flush_interval=60
    )
    t = rt.tracker(anonymous_id="a")
    for burst in range(3):
        for i in range(20):
            t.track("E", {"i": burst * 20 + i})
        wait_until(lambda: rt.delivery.pending <= 5, "the burst to be written", 10)
        wait_until(lambda: not rt.delivery.disk.writing, "the writer to end", 10)
    rt.delivery.shutdown(0.5)
    s = rt.delivery.stats()
    assert s["dropped"] == 0 and s["deferred"] >= 45 and balanced(s)
    stored = [r.message["properties"]["i"] for r in Store(store_path).events()]
    assert sorted(stored) == list(range(60)), "each message on disk once: deferred, or spooled"
