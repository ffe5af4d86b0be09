"""The store's schema: named states, claims owned across containers, a version and its migration.

A store written by 0.1.0 (``tests/fixtures/store_v0.py``, that release's ``store.py`` kept
verbatim) is opened by today's code, migrated in place and drained with nothing lost and
nothing sent twice; claims hold by their owner's lock, not by a pid.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver

from segment_middleware import claims
from segment_middleware.messages import Encoded
from segment_middleware.store import DEFERRED, LOCAL, SPOOL, Store
from segment_middleware.store_schema import VERSION, NewerStoreError

V0 = Path(__file__).parent / "fixtures" / "store_v0.py"
# Loads 0.1.0's store by path in a child process, as that release's process would run it.
LOAD_V0 = (
    "import importlib.util, sys\n"
    f"spec = importlib.util.spec_from_file_location('store_v0', {str(V0)!r})\n"
    "v0 = sys.modules['store_v0'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(v0)\n"
)


def load_v0() -> ModuleType:
    spec = importlib.util.spec_from_file_location("store_v0", V0)
    assert spec is not None and spec.loader is not None
    module = sys.modules["store_v0"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


def msg(message_id: str, **extra: Any) -> Encoded:
    m = {"type": "track", "event": "E", "userId": "u1", "messageId": message_id, **extra}
    return Encoded(m, json.dumps(m).encode())


def version(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def columns(path: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[1] for row in conn.execute("PRAGMA table_info(events)")}


def run(code: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def cli(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_") and k != "DJANGO_SETTINGS_MODULE"
    }
    return subprocess.run(
        [sys.executable, "-m", "segment_middleware", "--store", store, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def build_v0(path: str) -> dict[str, str]:
    """A store as 0.1.0 left it: local rows, spooled rows (two claimed by a process that
    died mid-replay), deferred rows claimed by a process that died, one row sent and one
    rejected. Returns each messageId's state as the migration must read it."""
    v0 = load_v0()
    old = v0.Store(path)
    old.insert([msg("sent-0")], SPOOL, error="HTTP 503")
    (row,) = old.claim(1)
    old.mark_replayed([row.id])
    old.insert([msg("rejected-0")], SPOOL, error="HTTP 503")
    (row,) = old.claim(1)
    old.mark_rejected([row.id], "rejected by the endpoint: 400 bad")
    old.insert([msg(f"local-{i}") for i in range(4)], LOCAL)
    old.insert([msg(f"spool-{i}") for i in range(6)], SPOOL, error="HTTP 503")
    old.close()
    dead = (
        LOAD_V0 + "import json\nfrom segment_middleware.messages import Encoded\n"
        "store = v0.Store(sys.argv[1])\n"
        "rows = [{'type': 'track', 'event': 'E', 'messageId': f'deferred-{i}'} for i in range(5)]\n"
        "store.insert([Encoded(m, json.dumps(m).encode()) for m in rows], 'deferred', claimed=True)\n"
        "print(len(store.claim(2)))\n"
    )
    assert run(dead, path).strip() == "2"
    states = {"sent-0": "sent", "rejected-0": "rejected", "spool-0": "claimed", "spool-1": "claimed"}
    states |= {f"local-{i}": "waiting" for i in range(4)}
    states |= {f"spool-{i}": "waiting" for i in range(2, 6)}
    states |= {f"deferred-{i}": "claimed" for i in range(5)}
    return states


def test_a_new_store_is_at_the_current_version_with_named_state(store_path: str) -> None:
    store = Store(store_path)
    store.insert([msg("a"), msg("b")], LOCAL)
    store.insert([msg("c")], DEFERRED, claimed=True)
    assert version(store_path) == VERSION == 1
    named = columns(store_path)
    assert {"state", "claimed_by", "settled_at"} <= named and "replayed_at" not in named
    a, b, c = store.events()
    assert (a.state, a.claimed_by, a.settled_at) == ("waiting", None, None)
    assert c.state == "claimed" and c.claimed_by == claims.token() and str(os.getpid()) in c.claimed_by
    store.mark_replayed([a.id])
    store.mark_rejected([b.id], "rejected by the endpoint: 400 bad")
    a, b, c = store.events()
    assert a.state == "sent" and a.replayed_at == a.settled_at and a.settled_at is not None
    assert b.state == "rejected" and b.error == "rejected by the endpoint: 400 bad"
    with pytest.raises(sqlite3.IntegrityError):  # the schema keeps a claim and its owner together
        store._connect().execute("UPDATE events SET state = 'claimed' WHERE id = ?", (a.id,))
    store.close()


def test_a_store_of_0_1_0_is_migrated_and_replayed_exactly_once(
    store_path: str, receiver: SegmentReceiver
) -> None:
    states = build_v0(store_path)
    assert version(store_path) == 0 and "replayed_at" in columns(store_path)
    with sqlite3.connect(store_path) as conn:
        old_ids = dict(conn.execute("SELECT message_id, id FROM events").fetchall())
        old_bodies = dict(conn.execute("SELECT message_id, body FROM events").fetchall())

    store = Store(store_path)
    rows = store.events()
    assert version(store_path) == VERSION and "replayed_at" not in columns(store_path)
    assert {r.message_id: r.state for r in rows} == states
    assert {r.message_id: r.id for r in rows} == old_ids, "every row keeps its id"
    assert {r.message_id: r.body for r in rows} == old_bodies
    assert {r.claimed_by for r in rows if r.state == "claimed"} == {rows[-1].claimed_by}
    assert rows[-1].claimed_by is not None and rows[-1].claimed_by.startswith(claims.LEGACY_PREFIX)
    assert next(r for r in rows if r.message_id == "rejected-0").error == "rejected by the endpoint: 400 bad"
    store.insert([msg("new-0")], LOCAL)
    assert store.events()[-1].id > max(old_ids.values())
    store.close()

    proc = cli(store_path, "replay", "--write-key", WRITE_KEY, "--host", receiver.url)
    assert proc.returncode == 0, proc.stderr
    pending = {m for m, state in states.items() if state in ("waiting", "claimed")} | {"new-0"}
    assert proc.stdout.strip() == f"replay: sent {len(pending)} message(s) to {receiver.url}"
    got = receiver.by_message_id()
    assert set(got) == pending and all(len(copies) == 1 for copies in got.values()), "each once"
    assert cli(store_path, "replay", "--write-key", WRITE_KEY, "--host", receiver.url).stdout.startswith(
        "replay: sent 0 message(s)"
    )
    assert len(receiver.messages) == len(pending)

    listing = cli(store_path, "events", "--json").stdout.splitlines()
    listed = [json.loads(line)["messageId"] for line in listing]
    assert sorted(listed) == sorted([*states, "new-0"])
    table = cli(store_path, "events").stdout.strip().splitlines()[1:]
    assert sum(line.endswith("(rejected)") for line in table) == 1
    assert sum(line.endswith("(replayed)") for line in table) == len(table) - 1
    store = Store(store_path)
    assert {r.state for r in store.events() if r.message_id != "rejected-0"} == {"sent"}
    store.close()


MIGRATE = (
    "import json, logging, sys\n"
    "from segment_middleware.store import Store\n"
    "said = []\n"
    "handler = logging.Handler(); handler.emit = lambda record: said.append(record.getMessage())\n"
    "logger = logging.getLogger('segment_middleware')\n"
    "logger.addHandler(handler); logger.setLevel(logging.INFO)\n"
    "print('opening', flush=True)\n"
    "store = Store(sys.argv[1])\n"
    "print(json.dumps({'count': store.count(), 'migrated': [m for m in said if 'migrated' in m]}))\n"
)


def test_two_processes_opening_an_old_store_at_once_migrate_it_once(store_path: str) -> None:
    states = build_v0(store_path)
    # Hold the write lock, so that both openers read version 0 and queue behind it.
    holder = sqlite3.connect(store_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    procs = [
        subprocess.Popen([sys.executable, "-c", MIGRATE, store_path], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "opening"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results.append(json.loads(out))
    assert [r["count"] for r in results] == [len(states)] * 2, "both read every row"
    assert sorted(len(r["migrated"]) for r in results) == [0, 1], "one migrated, the other waited"
    assert version(store_path) == VERSION
    store = Store(store_path)
    assert {r.message_id: r.state for r in store.events()} == states
    store.close()


def test_a_store_of_a_newer_version_is_refused_with_a_clear_error(store_path: str) -> None:
    Store(store_path).close()
    with sqlite3.connect(store_path) as conn:
        conn.execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(NewerStoreError, match=f"schema version {VERSION + 1}, newer"):
        Store(store_path).count()


HOLD_LOCK = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
    "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def claimed_by(store: Store, owner: str) -> int:
    return sum(r.claimed_by == owner for r in store.events())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX locks")
def test_a_claim_is_its_owners_while_it_lives_even_under_this_pid(store_path: str) -> None:
    """A process in another container may have this process's pid: its claims stay its own
    while it holds its lock, and go back to waiting once it has ended. A claim under this
    pid with no lock behind it (a predecessor whose pid was reused) is released at once."""
    store = Store(store_path)
    store.insert([msg(f"m-{i}") for i in range(6)], SPOOL)
    elsewhere = f"other-container:{os.getpid()}:0123456789abcdef"
    predecessor = f"{claims.token().split(':')[0]}:{os.getpid()}:fedcba9876543210"
    ids = [r.id for r in store.events()]
    conn = store._connect()
    for owner, batch in ((elsewhere, ids[:2]), (predecessor, ids[2:4])):
        conn.executemany(
            "UPDATE events SET state = 'claimed', claimed_by = ?, claimed_at = 0 WHERE id = ?",
            [(owner, i) for i in batch],
        )
    claims.hold(store_path)  # the owners' directory exists
    lock = claims._lock_path(claims.owners_dir(store_path), elsewhere)
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, lock], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        store.release_stale_claims()
        assert claimed_by(store, elsewhere) == 2, "alive elsewhere: kept"
        assert claimed_by(store, predecessor) == 0, "a reused pid's predecessor: released"
    finally:
        other.communicate("", timeout=30)
    store.release_stale_claims()
    assert claimed_by(store, elsewhere) == 0, "ended: released"
    assert len(store.events(pending_only=True)) == 6
    store.close()


RELEASE_STALE = (
    "import sys\n"
    "from segment_middleware.store import Store\n"
    "store = Store(sys.argv[1]); store.release_stale_claims()\n"
    "print(len(store.events(pending_only=True)))\n"
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_is_a_new_owner(store_path: str) -> None:
    store = Store(store_path)
    store.insert([msg(f"m-{i}") for i in range(5)], SPOOL)
    (mine,) = store.claim(1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            child = Store(store_path)
            taken = child.claim(2)
            os.write(write, json.dumps([claims.token(), [r.claimed_by for r in taken]]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        token, owners = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert token != claims.token() and str(pid) in token and owners == [token, token]
    # Another process sees the child ended and the parent alive (its lock outlived the
    # child's copy of the descriptor).
    assert run(RELEASE_STALE, store_path).strip() == "4"
    rows = {r.id: r for r in store.events()}
    assert rows[mine.id].state == "claimed" and rows[mine.id].claimed_by == claims.token()
    store.close()
