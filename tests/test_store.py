"""The store: WAL mode, several connections, claims, concurrent writers."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segment_middleware.messages import Encoded
from segment_middleware.store import LOCAL, SPOOL, Store


def _msg(i: int, **extra: Any) -> Encoded:
    m = {"type": "track", "event": f"E{i}", "userId": f"u{i % 3}", "messageId": f"m-{i}", **extra}
    return Encoded(m, json.dumps(m).encode())


@pytest.fixture
def two_stores(store_path: str) -> Iterator[tuple[Store, Store]]:
    a, b = Store(store_path), Store(store_path)
    yield a, b
    a.close()
    b.close()


def test_store_is_in_wal_mode_and_creates_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "events.sqlite3"
    store = Store(str(path))
    assert store.count() == 0
    store.close()
    assert path.exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_insert_and_list_across_two_connections(two_stores: tuple[Store, Store]) -> None:
    a, b = two_stores
    assert a.insert([_msg(i) for i in range(250)], LOCAL) == 250  # more than one INSERT chunk
    assert b.insert([_msg(1000, name="P", type="page")], SPOOL, error="HTTP 503") == 1
    assert a.insert([], LOCAL) == 0
    everything = b.events()
    assert len(everything) == 251 and a.count() == b.count() == 251
    assert [r.message_id for r in everything[:3]] == ["m-0", "m-1", "m-2"]
    assert [r.id for r in everything] == sorted(r.id for r in everything)
    last = a.events(kind=SPOOL)
    assert len(last) == 1
    (spooled,) = last
    assert (spooled.type, spooled.event, spooled.error) == ("page", "E1000", "HTTP 503")
    assert spooled.message == json.loads(spooled.body)
    assert len(a.events(user="u0", type="track")) == 84
    assert [r.message_id for r in a.events(after_id=everything[-3].id)] == ["m-249", "m-1000"]
    assert len(a.events(limit=5)) == 5
    assert sum(len(batch) for batch in b.iter_pending(batch=100)) == 251
    assert a.delete_user("u1") == 84 and b.count() == 167  # 83 tracks and the page


def test_claims_are_exclusive_across_connections(two_stores: tuple[Store, Store]) -> None:
    a, b = two_stores
    a.insert([_msg(i) for i in range(10)], SPOOL)
    a.insert([_msg(100)], LOCAL)
    first = a.claim(4)
    second = b.claim(100)
    assert len(first) == 4 and len(second) == 6  # the local row is not spool
    assert not {r.id for r in first} & {r.id for r in second}
    assert b.claim(100) == [] and a.claim(100, kind="all")[0].kind == LOCAL
    assert len(b.events(pending_only=True)) == 0
    a.release(r.id for r in first)
    again = b.claim(100)
    assert sorted(r.id for r in again) == sorted(r.id for r in first)
    b.mark_replayed(r.id for r in [*second, *again])
    assert all(r.replayed_at and r.replayed_at > 0 for r in a.events(kind=SPOOL))
    a.release_stale_claims()  # a live claimer (this process) and replayed rows stay put
    assert a.claim(100, kind="all") == []


def test_claims_of_a_dead_process_are_released(store_path: str) -> None:
    store = Store(store_path)
    store.insert([_msg(i) for i in range(5)], SPOOL)
    code = "import sys; from segment_middleware.store import Store; print(len(Store(sys.argv[1]).claim(3)))"
    out = subprocess.run(
        [sys.executable, "-c", code, store_path], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "3"
    assert len(store.events(pending_only=True)) == 2
    assert len(store.claim(100)) == 2  # the dead process still holds 3
    store.release_stale_claims()
    assert len(store.claim(100)) == 3
    store.close()


def test_claim_since(store_path: str) -> None:
    store = Store(store_path)
    store.insert([_msg(1)], SPOOL)
    conn = sqlite3.connect(store_path)
    with conn:
        conn.execute("UPDATE events SET stored_at = stored_at - 86400")
    conn.close()
    store.insert([_msg(2)], SPOOL)
    (recent,) = store.claim(10, since=time.time() - 3600)
    assert recent.message_id == "m-2"
    assert len(store.events(since=0)) == 2
    store.close()


def test_concurrent_writers_lose_nothing(store_path: str) -> None:
    errors: list[BaseException] = []

    def write(n: int) -> None:
        store = Store(store_path)
        try:
            for i in range(20):
                store.insert([_msg(n * 1000 + i * 10 + j) for j in range(10)], LOCAL)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    store = Store(store_path)
    ids = [r.message_id for r in store.events()]
    store.close()
    assert len(ids) == 800 and len(set(ids)) == 800
