"""The ``segment-middleware`` command, end to end: a real subprocess, a real receiver, a real store."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver

from segment_middleware.messages import Encoded
from segment_middleware.store import LOCAL, SPOOL, Store

BIN = Path(sys.executable).parent


class Cli:
    """Runs ``python -m segment_middleware`` with a clean environment in a temp directory."""

    def __init__(self, cwd: Path, store: str) -> None:
        self.cwd = cwd
        self.store = store

    def env(self, write_key: str | None = None, host: str | None = None, **extra: str) -> dict[str, str]:
        # Other test modules set DJANGO_SETTINGS_MODULE in this process; the command would
        # then read that project's settings, so it is passed only when a test asks for it.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SEGMENT_") and k != "DJANGO_SETTINGS_MODULE"
        }
        env["SEGMENT_LOCAL_STORE"] = self.store
        if write_key is not None:
            env["SEGMENT_WRITE_KEY"] = write_key
        if host is not None:
            env["SEGMENT_HOST"] = host
        env.update(extra)
        return env

    def __call__(
        self,
        *args: str,
        write_key: str | None = None,
        host: str | None = None,
        timeout: float = 30,
        **extra: str,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "segment_middleware", *args],
            env=self.env(write_key, host, **extra),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def cli(tmp_path: Path, store_path: str) -> Cli:
    return Cli(tmp_path, store_path)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Usage errors are exactly one line on stderr, with no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("segment-middleware: error: "), lines
    assert "Traceback" not in proc.stderr
    return lines[0]


def rows(store_path: str) -> list[Any]:
    if not Path(store_path).exists():
        return []
    store = Store(store_path)
    try:
        return store.events()
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# (argv after the command name, expected fields of the one message)
SENDS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "identify": (
        ["identify", "user-1", '{"plan": "pro", "seats": 3, "name": "Zoë"}'],
        {"type": "identify", "userId": "user-1", "traits": {"plan": "pro", "seats": 3, "name": "Zoë"}},
    ),
    "track": (
        ["track", "user-1", "Order Completed", '{"revenue": 9.5, "items": ["a", "b"], "ok": true}'],
        {
            "type": "track",
            "userId": "user-1",
            "event": "Order Completed",
            "properties": {"revenue": 9.5, "items": ["a", "b"], "ok": True},
        },
    ),
    "page": (
        ["page", "user-1", "Pricing", '{"path": "/pricing"}'],
        {"type": "page", "userId": "user-1", "name": "Pricing", "properties": {"path": "/pricing"}},
    ),
    "group": (
        ["group", "user-1", "acme-inc", '{"name": "Acme", "employees": 40}'],
        {
            "type": "group",
            "userId": "user-1",
            "groupId": "acme-inc",
            "traits": {"name": "Acme", "employees": 40},
        },
    ),
    "alias": (
        ["alias", "user-1", "anon-7"],
        {"type": "alias", "userId": "user-1", "previousId": "anon-7"},
    ),
}


# ---------------------------------------------------------------------- sending with a write key
@pytest.mark.parametrize("command", list(SENDS))
def test_send_with_write_key_arrives_before_the_process_exits(
    cli: Cli, receiver: SegmentReceiver, command: str
) -> None:
    argv, expected = SENDS[command]
    proc = cli(*argv, write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{command}: delivered to {receiver.url}"
    # No waiting: the command flushed before it exited, so the receiver already has it.
    (msg,) = receiver.messages
    for key, value in expected.items():
        assert msg[key] == value, key
    assert msg["messageId"] and msg["timestamp"].endswith("Z")
    assert msg["context"]["library"]["name"] == "segment-middleware"
    batch_requests = [r for r in receiver.requests if r.path == "/v1/batch"]
    assert batch_requests and all(r.auth_ok and r.status == 200 for r in batch_requests)
    assert WRITE_KEY not in proc.stdout + proc.stderr
    assert rows(cli.store) == []  # delivered, so nothing was stored or spooled


@pytest.mark.parametrize(
    ("argv", "name", "properties"),
    [
        (["page", "u9", '{"a": 1}'], None, {"a": 1}),  # a JSON object in the NAME slot is the properties
        (["page", "u9"], None, {}),
        (["page", "u9", "Home"], "Home", {}),
    ],
)
def test_page_name_and_properties_are_optional(
    cli: Cli, receiver: SegmentReceiver, argv: list[str], name: str | None, properties: dict[str, Any]
) -> None:
    proc = cli(*argv, write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 0, proc.stderr
    (msg,) = receiver.messages
    assert msg["type"] == "page" and msg["userId"] == "u9"
    assert msg.get("name") == name
    assert msg["properties"] == properties


def test_console_script_is_the_same_command(cli: Cli, receiver: SegmentReceiver) -> None:
    script = BIN / "segment-middleware"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    proc = subprocess.run(
        [str(script), "track", "script-user", "Script Ran"],
        env=cli.env(WRITE_KEY, receiver.url),
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    (msg,) = receiver.messages
    assert (msg["userId"], msg["event"]) == ("script-user", "Script Ran")


# ---------------------------------------------------------------------- no write key: the local store
@pytest.mark.parametrize("command", list(SENDS))
def test_send_without_write_key_goes_to_the_store(cli: Cli, command: str) -> None:
    argv, expected = SENDS[command]
    proc = cli(*argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{command}: stored in {cli.store}"
    (row,) = rows(cli.store)
    assert row.kind == "local" and row.type == command and row.user_id == "user-1"
    for key, value in expected.items():
        assert row.message[key] == value, key

    listing = cli("events")
    assert listing.returncode == 0, listing.stderr
    header, line = listing.stdout.strip().splitlines()
    assert header.split()[:4] == ["id", "stored", "kind", "type"]
    assert line.split()[0] == str(row.id)
    assert f" local  {command}" in line and line.rstrip().endswith("user-1")
    if command == "track":
        assert "Order Completed" in line
    if command == "page":
        assert "Pricing" in line

    as_json = cli("events", "--json")
    assert as_json.returncode == 0, as_json.stderr
    (text,) = as_json.stdout.strip().splitlines()
    message = json.loads(text)
    assert message == row.message
    assert message["messageId"] == row.message_id


def test_events_filters_and_limit(cli: Cli) -> None:
    store = Store(cli.store)
    messages = [
        {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m1"},
        {"type": "track", "event": "Signed Up", "userId": "u2", "messageId": "m2"},
        {"type": "identify", "traits": {"plan": "free"}, "userId": "u2", "messageId": "m3"},
        {"type": "page", "name": "Home", "userId": "u1", "messageId": "m4"},
    ]
    store.insert([Encoded(m, json.dumps(m).encode()) for m in messages], LOCAL)
    store.close()

    def listed(*args: str) -> list[dict[str, Any]]:
        proc = cli("events", "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines()]

    assert [(m["type"], m["userId"]) for m in listed()] == [
        ("track", "u1"),
        ("track", "u2"),
        ("identify", "u2"),
        ("page", "u1"),
    ]
    assert [m["userId"] for m in listed("--type", "track")] == ["u1", "u2"]
    assert [m["type"] for m in listed("--user", "u2")] == ["track", "identify"]
    assert [m["type"] for m in listed("--type", "page", "--user", "u2")] == []
    assert len(listed("--limit", "1")) == 1
    table = cli("events", "--user", "u1")
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 3  # header + 2 rows
    other = str(cli.cwd / "other.sqlite3")
    empty = cli("--store", other, "events")
    assert empty.returncode == 0 and empty.stdout == ""
    assert empty.stderr == f"events: none in {other}\n"


def test_events_follow_prints_new_rows_until_interrupted(cli: Cli) -> None:
    assert cli("track", "u1", "First").returncode == 0
    follower = subprocess.Popen(
        [sys.executable, "-m", "segment_middleware", "events", "--follow", "--json"],
        env=cli.env(),
        cwd=cli.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert json.loads(lines.get(timeout=10))["event"] == "First"
        assert cli("track", "u1", "Second").returncode == 0
        assert json.loads(lines.get(timeout=10))["event"] == "Second"
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
        assert follower.stderr is not None
        assert "Traceback" not in follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(5)
        reader.join(5)
        assert follower.stdout is not None and follower.stderr is not None
        follower.stdout.close()
        follower.stderr.close()


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["identify", "u1", "{not json"], "TRAITS_JSON is not valid JSON"),
        (["identify", "u1", "[1, 2]"], "TRAITS_JSON must be a JSON object"),
        (["track", "u1", "E", '{"a": 1,}'], "PROPERTIES_JSON is not valid JSON"),
        (["track", "u1", "E", '{"a": NaN}'], "properties['a']"),
        (["page", "u1", "Home", "{'single': 'quotes'}"], "PROPERTIES_JSON is not valid JSON"),
        (["group", "u1", "g1", "42"], "TRAITS_JSON must be a JSON object"),
    ],
)
def test_bad_json_exits_2_with_one_line_and_sends_nothing(
    cli: Cli, receiver: SegmentReceiver, argv: list[str], names: str
) -> None:
    proc = cli(*argv, write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert names in line
    assert WRITE_KEY not in proc.stderr + proc.stdout
    assert proc.stdout == ""
    receiver.wait_answered()  # the command has exited: whatever it posted is recorded
    assert receiver.requests == []  # nothing half-sent
    assert rows(cli.store) == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "required: command"),
        (["identify"], "USER_ID"),
        (["track", "u1"], "EVENT"),
        (["group", "u1"], "GROUP_ID"),
        (["alias", "u1"], "PREVIOUS_ID"),
        (["track", "u1", ""], "event must be a non-empty string"),
        (["group", "u1", ""], "group_id must be a non-empty string"),
        (["page", "u1", " "], "name must be a non-empty string"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_missing_or_empty_arguments_exit_2(
    cli: Cli, receiver: SegmentReceiver, argv: list[str], says: str
) -> None:
    proc = cli(*argv, write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 2, proc.stderr
    assert says in one_error_line(proc)
    assert WRITE_KEY not in proc.stderr
    assert receiver.requests == []


@pytest.mark.parametrize(
    "argv",
    [["track", "", "E"], ["identify", ""], ["alias", "", "anon-1"], ["track", "u" * 1025, "E"]],
    ids=["track-empty", "identify-empty", "alias-empty", "track-too-long"],
)
def test_empty_or_oversized_user_id_is_a_usage_error(cli: Cli, argv: list[str]) -> None:
    proc = cli(*argv)
    assert proc.returncode == 2
    assert "user_id" in one_error_line(proc)
    assert rows(cli.store) == []


def test_message_too_big_is_reported_not_delivered(cli: Cli, receiver: SegmentReceiver) -> None:
    props = json.dumps({"blob": "x" * 40_000})
    proc = cli("track", "u1", "Huge", props, write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 1
    assert "track: not delivered" in proc.stderr
    assert receiver.messages == []


# ---------------------------------------------------------------------- check
def test_check_against_a_healthy_receiver(cli: Cli, receiver: SegmentReceiver) -> None:
    proc = cli("check", write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "settings: ok (from environment)"
    assert out[1] == f"local store: {cli.store} (0 events)"
    assert "write key: set" in out
    assert f"host: {receiver.url} reachable, write key accepted" in out
    assert WRITE_KEY not in proc.stdout + proc.stderr
    (request,) = receiver.requests
    assert request.path == "/v1/batch" and request.auth_ok and request.status == 200
    assert receiver.messages == []  # an empty batch: checking sends no event


def test_check_with_a_wrong_write_key(cli: Cli, receiver: SegmentReceiver) -> None:
    wrong = "not-the-right-key-42"
    proc = cli("check", write_key=wrong, host=receiver.url)
    assert proc.returncode == 1
    assert f"host: {receiver.url} reachable, but it answered 401" in proc.stderr
    assert wrong not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_against_a_dead_port(cli: Cli) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    proc = cli("check", write_key=WRITE_KEY, host=host)
    assert time.monotonic() - start < 10
    assert proc.returncode == 1
    assert f"host: {host} not reachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert WRITE_KEY not in proc.stdout + proc.stderr


def test_check_against_a_receiver_that_went_down(cli: Cli, receiver: SegmentReceiver) -> None:
    receiver.refuse()
    proc = cli("check", write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 1
    assert "not reachable" in proc.stderr and "Traceback" not in proc.stderr


def test_check_without_write_key_counts_the_store(cli: Cli) -> None:
    assert cli("track", "u1", "E").returncode == 0
    proc = cli("check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "settings: ok (from environment)",
        f"local store: {cli.store} (1 events)",
        "write key: not set; events go to the local store",
    ]


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["check"], {"SEGMENT_HOST": "ftp://example.com"}, "SEGMENT_HOST"),
        (["track", "u1", "E"], {"SEGMENT_HOST": "api.segment.io"}, "SEGMENT_HOST"),
        (["check"], {"SEGMENT_TRUSTED_PROXIES": "10.0.0.0/8, not-an-ip"}, "SEGMENT_TRUSTED_PROXIES"),
        (["identify", "u1"], {"SEGMENT_EXCLUDE_PATHS": "/health, metrics"}, "SEGMENT_EXCLUDE_PATHS"),
        (["check"], {"SEGMENT_WRITE_KEY": "my secret key"}, "SEGMENT_WRITE_KEY"),
        (["track", "u1", "E"], {"SEGMENT_WRITE_KEY": "secret" * 50}, "SEGMENT_WRITE_KEY"),
    ],
)
def test_invalid_settings_exit_2_naming_the_variable(
    cli: Cli, argv: list[str], env: dict[str, str], names: str
) -> None:
    proc = cli(*argv, **env)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert line.startswith(f"segment-middleware: error: {names}: ")
    assert "secret" not in line  # a rejected write key is never echoed
    assert rows(cli.store) == []


def test_check_with_an_unusable_store(cli: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = cli("--store", str(blocker / "events.sqlite3"), "check")
    assert proc.returncode == 1
    assert "is not usable" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- replay
def test_rejected_send_is_spooled_and_replay_sends_the_original_message_id(
    cli: Cli, receiver: SegmentReceiver
) -> None:
    receiver.fail_with(401)  # not retried: spooled at once
    proc = cli("track", "u1", "During Outage", '{"n": 1}', write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 1
    assert f"track: not delivered to {receiver.url}; spooled in {cli.store}" in proc.stderr
    assert WRITE_KEY not in proc.stderr + proc.stdout
    assert receiver.messages == []
    (row,) = rows(cli.store)
    assert row.kind == SPOOL and row.replayed_at is None and row.event == "During Outage"

    receiver.healthy()
    receiver.clear()
    proc = cli("replay", write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"replay: sent 1 message(s) to {receiver.url}"
    (msg,) = receiver.messages
    assert msg["messageId"] == row.message_id
    assert msg == row.message
    (after,) = rows(cli.store)
    assert after.replayed_at is not None and after.replayed_at > 0

    again = cli("replay", write_key=WRITE_KEY, host=receiver.url)
    assert again.returncode == 0 and "sent 0 message(s)" in again.stdout
    assert len(receiver.messages) == 1


def test_replay_sends_local_rows_with_flags_and_marks_them(cli: Cli, receiver: SegmentReceiver) -> None:
    assert cli("track", "u1", "Offline 0").returncode == 0
    store = Store(cli.store)
    messages = [
        {"type": "track", "event": f"Offline {i}", "userId": "u1", "messageId": f"m{i}"} for i in (1, 2)
    ]
    store.insert([Encoded(m, json.dumps(m).encode()) for m in messages], LOCAL)
    store.close()
    stored = rows(cli.store)
    proc = cli("replay", "--write-key", WRITE_KEY, "--host", receiver.url)
    assert proc.returncode == 0, proc.stderr
    assert "sent 3 message(s)" in proc.stdout
    got = receiver.messages
    assert [m["messageId"] for m in got] == [r.message_id for r in stored]
    assert [m["event"] for m in got] == ["Offline 0", "Offline 1", "Offline 2"]
    listing = cli("events").stdout.strip().splitlines()[1:]
    assert len(listing) == 3 and all(line.endswith("(replayed)") for line in listing)


def test_failed_replay_keeps_rows_for_the_next_one(cli: Cli, receiver: SegmentReceiver) -> None:
    store = Store(cli.store)
    messages = [
        {"type": "track", "event": "Spooled", "userId": "u1", "messageId": f"mid-{i}", "properties": {"i": i}}
        for i in range(3)
    ]
    store.insert([Encoded(m, json.dumps(m).encode()) for m in messages], SPOOL, error="test")
    store.close()

    receiver.fail_with(401)
    proc = cli("replay", write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 1
    assert "replay: stopped after 0 message(s): APIError; 3 left" in proc.stderr
    assert WRITE_KEY not in proc.stderr
    assert all(r.state == "waiting" for r in rows(cli.store))  # released, not lost

    receiver.healthy()
    proc = cli("replay", write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 0, proc.stderr
    assert sorted(m["messageId"] for m in receiver.messages) == ["mid-0", "mid-1", "mid-2"]
    assert all(len(v) == 1 for v in receiver.by_message_id().values())


def test_replay_since_only_sends_recent_rows(cli: Cli, receiver: SegmentReceiver) -> None:
    for name in ("Old", "New"):
        assert cli("track", "u1", name).returncode == 0
    conn = sqlite3.connect(cli.store)
    with conn:
        conn.execute("UPDATE events SET stored_at = ? WHERE event = 'Old'", (time.time() - 3 * 86400,))
    conn.close()

    proc = cli("replay", "--since", "2h", write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 0, proc.stderr
    assert [m["event"] for m in receiver.messages] == ["New"]
    proc = cli("replay", "--since", "2000-01-01", write_key=WRITE_KEY, host=receiver.url)
    assert proc.returncode == 0, proc.stderr
    assert [m["event"] for m in receiver.messages] == ["New", "Old"]


@pytest.mark.parametrize(
    ("argv", "env_key", "says"),
    [
        (["replay"], None, "replay needs a write key"),
        (["replay", "--since", "last tuesday"], WRITE_KEY, "--since"),
        (["replay", "--since", "2026-13-45"], WRITE_KEY, "--since"),
        (["replay", "--host", "not a url"], WRITE_KEY, "SEGMENT_HOST"),
    ],
)
def test_replay_usage_errors(cli: Cli, argv: list[str], env_key: str | None, says: str) -> None:
    proc = cli(*argv, write_key=env_key)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert says in line
    assert WRITE_KEY not in line


def test_one_rejected_row_does_not_block_replay_of_the_others(cli: Cli, receiver: SegmentReceiver) -> None:
    store = Store(cli.store)
    messages = [
        {
            "type": "track",
            "event": "E",
            "userId": "u1",
            "messageId": f"row-{i}",
            "properties": {"bad": i == 1},
        }
        for i in range(3)
    ]
    store.insert([Encoded(m, json.dumps(m).encode()) for m in messages], SPOOL, error="test")
    store.close()
    receiver.reject_messages(lambda m: m.get("properties", {}).get("bad") is True)
    cli("replay", write_key=WRITE_KEY, host=receiver.url)
    cli("replay", write_key=WRITE_KEY, host=receiver.url)
    assert sorted(m["messageId"] for m in receiver.messages) == ["row-0", "row-2"]


# ---------------------------------------------------------------------- events: --limit, --event, --since
def store_messages(store_path: str, messages: list[dict[str, Any]], kind: str = LOCAL) -> None:
    store = Store(store_path)
    try:
        store.insert([Encoded(m, json.dumps(m).encode()) for m in messages], kind)
    finally:
        store.close()


def test_events_limit_shows_the_latest_n_oldest_first(cli: Cli) -> None:
    store_messages(
        cli.store,
        [{"type": "track", "event": f"Step {i}", "userId": "u1", "messageId": f"m{i}"} for i in range(1, 8)],
    )
    proc = cli("events", "--json", "--limit", "3")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["event"] for line in proc.stdout.splitlines()] == ["Step 5", "Step 6", "Step 7"]

    table = cli("events", "--limit", "2")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.strip().splitlines()
    assert header.split()[0] == "id"
    assert len(lines) == 2 and "Step 6" in lines[0] and "Step 7" in lines[1]  # in time order

    # More than there are: all of them. With a filter: the latest N of what matches.
    assert len(cli("events", "--json", "--limit", "100").stdout.splitlines()) == 7
    filtered = cli("events", "--json", "--limit", "1", "--user", "u1")
    assert [json.loads(line)["event"] for line in filtered.stdout.splitlines()] == ["Step 7"]


def test_events_limit_past_one_page_of_the_store(cli: Cli) -> None:
    """The store is read in pages; the latest N and the --event filter hold across them."""
    messages = [
        {"type": "track", "event": "Tick" if i % 3 else "Tock", "userId": "u1", "messageId": f"m{i}"}
        for i in range(1, 1301)
    ]
    store_messages(cli.store, messages)
    proc = cli("events", "--json", "--event", "Tock", "--limit", "2")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["messageId"] for line in proc.stdout.splitlines()] == ["m1296", "m1299"]
    every = cli("events", "--json", "--event", "Tock")
    assert len(every.stdout.splitlines()) == 433  # 3, 6, ..., 1299


def test_events_event_picks_track_events_by_name(cli: Cli) -> None:
    store_messages(
        cli.store,
        [
            {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m1"},
            {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m2"},
            {"type": "page", "name": "Signed Up", "userId": "u2", "messageId": "m3"},  # a page, not a track
            {"type": "track", "event": "Signed Up", "userId": "u2", "messageId": "m4"},
        ],
    )

    def ids(*args: str) -> list[str]:
        proc = cli("events", "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line)["messageId"] for line in proc.stdout.splitlines()]

    assert ids("--event", "Signed Up") == ["m1", "m4"]
    assert ids("--event", "Signed Up", "--user", "u2") == ["m4"]
    assert ids("--event", "Signed Up", "--type", "track") == ["m1", "m4"]
    assert ids("--event", "Nothing Like It") == []
    table = cli("events", "--event", "Order Completed")
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 2  # header + 1 row
    assert "Order Completed" in table.stdout

    wrong = cli("events", "--event", "Signed Up", "--type", "page")
    assert wrong.returncode == 2
    assert "--event" in one_error_line(wrong) and wrong.stdout == ""


def test_events_since(cli: Cli) -> None:
    for name in ("Last Week", "Yesterday", "Just Now"):
        assert cli("track", "u1", name).returncode == 0
    conn = sqlite3.connect(cli.store)
    with conn:
        conn.execute("UPDATE events SET stored_at = ? WHERE event = 'Last Week'", (time.time() - 7 * 86400,))
        conn.execute("UPDATE events SET stored_at = ? WHERE event = 'Yesterday'", (time.time() - 86400,))
    conn.close()

    def events(*args: str) -> list[str]:
        proc = cli("events", "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line)["event"] for line in proc.stdout.splitlines()]

    assert events("--since", "2h") == ["Just Now"]
    assert events("--since", "2d") == ["Yesterday", "Just Now"]
    assert events("--since", "2000-01-01") == ["Last Week", "Yesterday", "Just Now"]
    assert events("--since", "2000-01-01T00:00:00Z", "--limit", "1") == ["Just Now"]
    assert events("--since", "3d", "--event", "Yesterday") == ["Yesterday"]
    future = (time.time() + 86400 * 2) // 86400 * 86400
    assert events("--since", time.strftime("%Y-%m-%d", time.gmtime(future))) == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["events", "--since", "last tuesday"], "--since"),
        (["events", "--since", "2026-13-45"], "--since"),
        (["events", "--limit", "0"], "--limit"),
        (["events", "--limit", "-3"], "--limit"),
        (["events", "--limit", "ten"], "--limit"),
    ],
)
def test_events_usage_errors(cli: Cli, argv: list[str], says: str) -> None:
    proc = cli(*argv)
    assert proc.returncode == 2
    assert says in one_error_line(proc)
    assert proc.stdout == ""


def test_events_with_nothing_to_show_says_so_once_on_stderr(cli: Cli) -> None:
    assert cli("track", "u1", "Signed Up").returncode == 0
    proc = cli("events", "--user", "someone-else")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == f"events: none match in {cli.store}\n"
    as_json = cli("events", "--user", "someone-else", "--json")  # nothing at all: stdout stays JSON lines
    assert as_json.returncode == 0 and as_json.stdout == "" and as_json.stderr == ""


# ---------------------------------------------------------------------- a closed pipe
def run_bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


MANAGE = Path(__file__).resolve().parent.parent / "example_django" / "manage.py"


@pytest.mark.parametrize(
    "command",
    [
        "{python} -m segment_middleware events",
        "{python} -m segment_middleware events --json",
        "{python} {manage} segment events --json",
    ],
    ids=["table", "json", "manage.py"],
)
def test_events_into_a_closed_pipe_ends_quietly(cli: Cli, command: str) -> None:
    # Far more than the pipe's buffer (64 KiB) holds: the command is still writing when
    # `head` exits, so its next write meets the closed pipe.
    pad = "x" * 200
    store_messages(
        cli.store,
        [
            {"type": "track", "event": "Bulk", "userId": "u1", "messageId": f"m{i}", "properties": {"p": pad}}
            for i in range(2000)
        ],
    )
    line = command.format(python=sys.executable, manage=MANAGE)
    proc = run_bash(f'{line} | head -1; echo "status ${{PIPESTATUS[0]}}"', cli.env(), cli.cwd)
    assert proc.stderr == ""  # no traceback, no "BrokenPipeError", no "Exception ignored"
    first, status = proc.stdout.splitlines()
    assert status == "status 141"  # as a command ended by SIGPIPE
    if "--json" in command:
        assert json.loads(first)["messageId"] == "m0"
    else:
        assert first.split()[:2] == ["id", "stored"]


# ---------------------------------------------------------------------- --version, help
def test_version(cli: Cli) -> None:
    from segment_middleware.version import __version__

    proc = cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"segment-middleware {__version__}\n"


def _actions_without_help(parser: Any, path: str) -> list[str]:
    import argparse

    missing = []
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help == argparse.SUPPRESS:
            missing.append(f"{path} {name}")
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest for choice in action._choices_actions if choice.help}
            for command, subparser in action.choices.items():
                if command not in helped:
                    missing.append(f"{path} {command} (the sub-command)")
                missing += _actions_without_help(subparser, f"{path} {command}")
    return missing


def test_every_argument_and_command_has_help() -> None:
    from segment_middleware.cli import build_parser

    parser = build_parser()
    assert _actions_without_help(parser, "segment-middleware") == []
    # The walk reaches everything (so it can fail): every command, and their arguments.
    sub = next(a for a in parser._actions if a.choices and "events" in a.choices)
    commands = {"identify", "track", "page", "group", "alias", "events", "replay", "check", "plan"}
    commands |= {"delete-user", "regulations"}
    assert set(sub.choices) == commands
    assert {"--event", "--since", "--limit"} <= {
        o for a in sub.choices["events"]._actions for o in a.option_strings
    }


def test_the_walk_finds_an_argument_without_help() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--documented", help="it says what it does")
    sub = parser.add_subparsers(dest="command", help="commands")
    sub.add_parser("silent").add_argument("thing")
    assert _actions_without_help(parser, "p") == ["p silent (the sub-command)", "p silent thing"]


# ---------------------------------------------------------------------- a Django project's settings
def django_project(cli: Cli, segment: str, name: str = "project_settings") -> str:
    """A Django settings module in the command's working directory (on its sys.path);
    ``segment`` is the source text of its SEGMENT setting."""
    (cli.cwd / f"{name}.py").write_text(
        "SECRET_KEY = 'tests-only'\n"
        "INSTALLED_APPS = [\n"
        "    'django.contrib.auth', 'django.contrib.contenttypes', 'segment_middleware.django'\n"
        "]\n"
        f"SEGMENT = {segment}\n"
    )
    return name


def test_check_reads_the_django_projects_settings(cli: Cli, receiver: SegmentReceiver) -> None:
    project_store = str(cli.cwd / "project.sqlite3")
    module = django_project(
        cli, repr({"WRITE_KEY": WRITE_KEY, "HOST": receiver.url, "LOCAL_STORE": project_store})
    )
    proc = cli("check", DJANGO_SETTINGS_MODULE=module)  # nothing Segment in the environment but the store
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"settings: ok (from Django settings {module})",
        f"local store: {project_store} (0 events)",  # SEGMENT['LOCAL_STORE'] over SEGMENT_LOCAL_STORE
        "write key: set",
        f"host: {receiver.url} reachable, write key accepted",
    ]
    (request,) = receiver.requests
    assert request.auth_ok  # the project's write key was the one sent
    assert WRITE_KEY not in proc.stdout + proc.stderr

    # The environment fills in what the project leaves out, as for the middleware.
    bare = django_project(cli, "{}", name="bare_settings")
    proc = cli("check", DJANGO_SETTINGS_MODULE=bare)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == [
        f"settings: ok (from Django settings {bare})",
        f"local store: {cli.store} (0 events)",
    ]


@pytest.mark.parametrize(
    ("segment", "says"),
    [
        ("{'HOST': 'ftp://example.com'}", ["SEGMENT['HOST']: "]),
        ("{'HOST': 'ftp://example.com', 'FLUSH_AT': 0}", ["SEGMENT['HOST']: ", "SEGMENT['FLUSH_AT']: "]),
        ("{'NOT_A_SETTING': 1}", ["SEGMENT['NOT_A_SETTING']: unknown setting"]),
        ("'not a dict'", ["SEGMENT: must be a dict"]),
        ("{'WRITE_KEY': 'my secret key'}", ["SEGMENT['WRITE_KEY']: "]),
    ],
    ids=["bad-host", "two-bad", "unknown", "not-a-dict", "bad-key"],
)
def test_bad_django_settings_exit_2_with_one_line(cli: Cli, segment: str, says: list[str]) -> None:
    module = django_project(cli, segment)
    proc = cli("check", DJANGO_SETTINGS_MODULE=module)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    for part in says:
        assert part in line
    assert "secret" not in line
    assert proc.stdout == ""
    for argv in (["events"], ["replay", "--write-key", WRITE_KEY]):  # the same settings, the same error
        other = cli(*argv, DJANGO_SETTINGS_MODULE=module)
        assert other.returncode == 2 and says[0] in one_error_line(other)


@pytest.mark.parametrize(
    ("module_text", "says"),
    [
        (None, "DJANGO_SETTINGS_MODULE no_such_settings: cannot be loaded: ModuleNotFoundError"),
        ("raise RuntimeError('no DATABASE_URL')\n", "cannot be loaded: RuntimeError: no DATABASE_URL"),
        ("SECRET_KEY = (\n", "cannot be loaded: SyntaxError"),
    ],
    ids=["missing", "raises", "syntax"],
)
def test_a_django_settings_module_that_does_not_load(cli: Cli, module_text: str | None, says: str) -> None:
    if module_text is not None:
        (cli.cwd / "no_such_settings.py").write_text(module_text)
    proc = cli("check", DJANGO_SETTINGS_MODULE="no_such_settings")
    assert proc.returncode == 2
    assert says in one_error_line(proc)


def test_events_and_replay_use_the_django_projects_settings(cli: Cli, receiver: SegmentReceiver) -> None:
    project_store = str(cli.cwd / "project.sqlite3")
    store_messages(
        project_store, [{"type": "track", "event": "In Project", "userId": "u1", "messageId": "p1"}]
    )
    store_messages(cli.store, [{"type": "track", "event": "In Env", "userId": "u1", "messageId": "e1"}])
    module = django_project(
        cli, repr({"WRITE_KEY": WRITE_KEY, "HOST": receiver.url, "LOCAL_STORE": project_store})
    )

    def listed(*args: str) -> list[str]:
        proc = cli("events", "--json", *args, DJANGO_SETTINGS_MODULE=module)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line)["messageId"] for line in proc.stdout.splitlines()]

    assert listed() == ["p1"]
    assert listed() == [r.message_id for r in rows(project_store)]
    assert listed("--limit", "1", "--event", "In Project") == ["p1"]
    assert cli("events", "--json").stdout.count("\n") == 1  # without the module: the environment's store
    assert json.loads(cli("events", "--json").stdout)["messageId"] == "e1"
    with_flag = cli("--store", cli.store, "events", "--json", DJANGO_SETTINGS_MODULE=module)
    assert [json.loads(line)["messageId"] for line in with_flag.stdout.splitlines()] == ["e1"]  # flag wins

    # replay: the project's WRITE_KEY and HOST, no flags, no environment variables for them.
    proc = cli("replay", DJANGO_SETTINGS_MODULE=module)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"replay: sent 1 message(s) to {receiver.url}"
    assert [m["messageId"] for m in receiver.messages] == ["p1"]
    assert WRITE_KEY not in proc.stdout + proc.stderr


def test_replay_flags_win_over_the_django_projects_settings(cli: Cli, receiver: SegmentReceiver) -> None:
    project_store = str(cli.cwd / "project.sqlite3")
    store_messages(project_store, [{"type": "track", "event": "E", "userId": "u1", "messageId": "p1"}])
    dead = f"http://127.0.0.1:{free_port()}"
    module = django_project(
        cli, repr({"WRITE_KEY": "wrong-key-1234", "HOST": dead, "LOCAL_STORE": project_store})
    )
    proc = cli("replay", "--host", receiver.url, "--write-key", WRITE_KEY, DJANGO_SETTINGS_MODULE=module)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"replay: sent 1 message(s) to {receiver.url}"
    assert all(r.auth_ok for r in receiver.requests) and receiver.requests

    nokey = django_project(cli, repr({"LOCAL_STORE": project_store}), name="nokey_settings")
    proc = cli("replay", DJANGO_SETTINGS_MODULE=nokey)
    assert proc.returncode == 2
    assert (
        "replay needs a write key: --write-key, SEGMENT['WRITE_KEY'] or SEGMENT_WRITE_KEY"
        in one_error_line(proc)
    )
    bad_flag = cli("replay", "--host", "not a url", DJANGO_SETTINGS_MODULE=module)
    assert bad_flag.returncode == 2 and "SEGMENT_HOST" in one_error_line(bad_flag)


# ---------------------------------------------------------------------- python manage.py segment
def manage(cli: Cli, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python example_django/manage.py segment ...`` as a user of the example shop runs it."""
    return subprocess.run(
        [sys.executable, str(MANAGE), "segment", *args],
        env=cli.env(**env),
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_manage_py_segment_check(cli: Cli, receiver: SegmentReceiver) -> None:
    proc = manage(cli, "check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "settings: ok (from Django settings shop.settings)",
        f"local store: {cli.store} (0 events)",
        "write key: not set; events go to the local store",
    ]
    with_key = manage(cli, "check", SEGMENT_WRITE_KEY=WRITE_KEY, SEGMENT_HOST=receiver.url)
    assert with_key.returncode == 0, with_key.stderr
    assert f"host: {receiver.url} reachable, write key accepted" in with_key.stdout
    assert WRITE_KEY not in with_key.stdout + with_key.stderr


def test_manage_py_segment_events_and_replay(cli: Cli, receiver: SegmentReceiver) -> None:
    store_messages(
        cli.store,
        [{"type": "track", "event": f"Shop {i}", "userId": "alice", "messageId": f"s{i}"} for i in range(3)],
    )
    proc = manage(cli, "events", "--json", "--limit", "2")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["messageId"] for line in proc.stdout.splitlines()] == ["s1", "s2"]
    table = manage(cli, "events", "--event", "Shop 0")
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 2
    empty = manage(cli, "events", "--user", "bob")
    assert empty.returncode == 0 and empty.stdout == ""
    assert empty.stderr == f"events: none match in {cli.store}\n"

    proc = manage(cli, "replay", SEGMENT_WRITE_KEY=WRITE_KEY, SEGMENT_HOST=receiver.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"replay: sent 3 message(s) to {receiver.url}"
    assert sorted(m["messageId"] for m in receiver.messages) == ["s0", "s1", "s2"]


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["events", "--since", "last tuesday"], {}, "--since"),
        (["replay"], {}, "replay needs a write key"),
        (["check"], {"SEGMENT_HOST": "ftp://example.com"}, "SEGMENT['HOST']"),
    ],
)
def test_manage_py_segment_bad_input_exits_2(
    cli: Cli, argv: list[str], env: dict[str, str], says: str
) -> None:
    proc = manage(cli, *argv, **env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("CommandError: ") and says in lines[0], proc.stderr
    assert proc.stdout == ""


def test_manage_py_segment_offers_the_project_commands(cli: Cli) -> None:
    proc = manage(cli, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "{check,events,replay,delete-user,regulations}" in proc.stdout
    unknown = manage(cli, "track", "u1", "E")  # sending single calls stays with segment-middleware
    assert unknown.returncode != 0 and "invalid choice" in unknown.stderr


def test_manage_py_segment_reports_a_failure_like_any_command(cli: Cli) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proc = manage(cli, "check", SEGMENT_WRITE_KEY=WRITE_KEY, SEGMENT_HOST=dead)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"host: {dead} not reachable (ConnectionError)",
        "CommandError: segment check: exit status 1",
    ]


CALL_COMMAND = """
import io, json, os, sys
sys.path.insert(0, sys.argv[1])
os.environ["DJANGO_SETTINGS_MODULE"] = "shop.settings"
import django
from django.core.management import call_command
django.setup()
out = io.StringIO()
call_command("segment", "events", "--json", stdout=out)
print(json.dumps(out.getvalue()))
"""


def test_call_command_captures_the_output(cli: Cli) -> None:
    store_messages(cli.store, [{"type": "track", "event": "E", "userId": "u1", "messageId": "c1"}])
    proc = subprocess.run(
        [sys.executable, "-c", CALL_COMMAND, str(MANAGE.parent)],
        env=cli.env(),
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    captured = json.loads(proc.stdout)  # only what the script printed: the command's went to `out`
    assert json.loads(captured)["messageId"] == "c1"
