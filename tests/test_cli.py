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
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_")}
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
    empty = cli("--store", str(cli.cwd / "other.sqlite3"), "events")
    assert empty.returncode == 0 and empty.stdout == ""


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
    assert out[0] == "settings: ok"
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
        "settings: ok",
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
    assert all(r.replayed_at is None for r in rows(cli.store))  # released, not lost

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
