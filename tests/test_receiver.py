"""Tests for ``segment_receiver.SegmentReceiver`` (tests/segment_receiver.py).

The receiver is the ground truth of every end-to-end test we (and our users) write, so it is tested
against the real SDK request code (``segment.analytics.request.post`` and ``Client``) as well as plain
``requests`` and raw ``http.client``: if it misreads what the SDK sends, or its faults do not look to
the SDK like the real failures they model, every test built on it is wrong.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from segment.analytics import Client
from segment.analytics.request import APIError, parse_retry_after, post
from segment_receiver import CHAOS_OUTCOMES, MAX_BATCH_BYTES, ReceivedRequest, SegmentReceiver

KEY = "test-write-key"
REPO_ROOT = Path(__file__).resolve().parents[1]


def msg(event: str = "Signed Up", **extra: Any) -> dict[str, Any]:
    """A minimal track message with a unique messageId, as the SDK would build it."""
    return {"type": "track", "event": event, "userId": "user-1", "messageId": str(uuid.uuid4()), **extra}


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.fixture
def receiver() -> Iterator[SegmentReceiver]:
    with SegmentReceiver(write_key=KEY) as r:
        yield r


def raw_post(
    receiver: SegmentReceiver,
    body: bytes | dict[str, Any],
    path: str = "/v1/batch",
    headers: dict[str, str] | None = None,
    auth: bool = True,
    timeout: float = 5.0,
) -> requests.Response:
    """POST with plain requests (no SDK), so tests control every byte and header."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if auth:
        all_headers["Authorization"] = basic(KEY)
    return requests.post(receiver.url + path, data=data, headers=all_headers, timeout=timeout)


# ---------------------------------------------------------------------- acceptance


def test_sdk_post_is_accepted_and_recorded(receiver: SegmentReceiver) -> None:
    m1, m2 = msg("A"), msg("B")
    res = post(KEY, host=receiver.url, batch=[m1, m2])

    assert res.status_code == 200
    assert res.json() == {"success": True}
    assert receiver.messages == [m1, m2]
    [batch] = receiver.batches
    assert batch["batch"] == [m1, m2]
    assert batch["writeKey"] == KEY and "sentAt" in batch
    [req] = receiver.requests
    assert isinstance(req, ReceivedRequest)
    assert (req.path, req.status, req.auth_ok, req.gzip) == ("/v1/batch", 200, True, False)
    assert req.headers["Authorization"] == basic(KEY)
    assert req.body == batch
    assert req.received_at <= time.monotonic()


def test_sdk_client_sync_mode_delivers_track(receiver: SegmentReceiver) -> None:
    client = Client(KEY, host=receiver.url, sync_mode=True)
    success, sent = client.track("user-42", "Order Completed", {"total": 12.5})

    assert success
    [received] = receiver.wait_for(1, timeout=5)
    assert received["event"] == "Order Completed"
    assert received["userId"] == "user-42"
    assert received["properties"] == {"total": 12.5}
    assert received["messageId"] == sent["messageId"]
    assert list(receiver.by_message_id()) == [sent["messageId"]]


def test_sdk_gzip_body_is_decompressed(receiver: SegmentReceiver) -> None:
    m = msg()
    post(KEY, host=receiver.url, gzip=True, batch=[m])

    [req] = receiver.requests
    assert req.gzip is True
    assert req.headers["Content-Encoding"] == "gzip"
    assert receiver.messages == [m]


def test_body_write_key_is_enough_without_header(receiver: SegmentReceiver) -> None:
    m = msg()
    res = raw_post(receiver, {"batch": [m], "writeKey": KEY}, auth=False)

    assert res.status_code == 200
    assert receiver.messages == [m]
    assert receiver.requests[0].auth_ok is True


@pytest.mark.parametrize("kind", ["track", "identify", "page"])
def test_single_message_endpoints_record_a_batch_of_one(receiver: SegmentReceiver, kind: str) -> None:
    body = {"userId": "u1", "messageId": "mid-1"}
    res = raw_post(receiver, body, path=f"/v1/{kind}")

    assert res.status_code == 200
    assert receiver.messages == [{"userId": "u1", "messageId": "mid-1", "type": kind}]
    assert receiver.batches == [{"batch": receiver.messages}]


def test_keep_alive_reuses_one_connection(receiver: SegmentReceiver) -> None:
    """The SDK pools connections; http.client drops its socket whenever the server says close."""
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    payload = json.dumps({"batch": [msg()]})
    headers = {"Authorization": basic(KEY), "Content-Type": "application/json"}
    try:
        conn.request("POST", "/v1/batch", body=payload, headers=headers)
        first = conn.getresponse()
        first_body = first.read()
        first_sock = conn.sock
        conn.request("POST", "/v1/batch", body=payload, headers=headers)
        second = conn.getresponse()
        second.read()
        second_sock = conn.sock
    finally:
        conn.close()

    assert first.version == 11
    assert first.getheader("Content-Length") == str(len(first_body))
    assert first_sock is not None and second_sock is first_sock
    assert (first.status, second.status) == (200, 200)
    assert len(receiver.messages) == 2


def test_no_access_log_on_stderr(receiver: SegmentReceiver, capfd: pytest.CaptureFixture[str]) -> None:
    post(KEY, host=receiver.url, batch=[msg()])
    raw_post(receiver, {"x": 1}, path="/nope")
    receiver.reset(times=1)
    with pytest.raises(requests.ConnectionError):
        raw_post(receiver, {"batch": [msg()]})

    assert capfd.readouterr().err == ""


# ---------------------------------------------------------------------- rejections


def test_wrong_write_key_is_401_and_not_recorded_as_messages(receiver: SegmentReceiver) -> None:
    with pytest.raises(APIError) as err:
        post("wrong-key", host=receiver.url, batch=[msg()])

    assert err.value.status == 401
    assert err.value.code == "unauthorized"
    assert receiver.messages == [] and receiver.batches == []
    [req] = receiver.requests
    assert (req.status, req.auth_ok) == (401, False)


def test_missing_auth_is_401(receiver: SegmentReceiver) -> None:
    res = raw_post(receiver, {"batch": [msg()]}, auth=False)

    assert res.status_code == 401
    assert res.json()["code"] == "unauthorized"
    assert receiver.messages == []


def test_bad_json_and_bad_gzip_are_400_and_recorded(receiver: SegmentReceiver) -> None:
    bad_json = raw_post(receiver, b"{not json")
    bad_gzip = raw_post(receiver, b"definitely not gzip", headers={"Content-Encoding": "gzip"})
    not_a_batch = raw_post(receiver, {"batch": "nope"})

    assert [bad_json.status_code, bad_gzip.status_code, not_a_batch.status_code] == [400, 400, 400]
    assert bad_json.json()["code"] == "invalid_request"
    assert [r.status for r in receiver.requests] == [400, 400, 400]
    assert receiver.requests[1].gzip is True
    assert receiver.messages == []


def test_body_over_500kb_is_400(receiver: SegmentReceiver) -> None:
    big = {"batch": [msg(properties={"blob": "x" * MAX_BATCH_BYTES})]}
    res = raw_post(receiver, big)
    # The limit is on the JSON, also when it arrives gzipped (where it compresses to almost nothing).
    zipped = raw_post(receiver, gzip.compress(json.dumps(big).encode()), headers={"Content-Encoding": "gzip"})
    small = raw_post(receiver, {"batch": [msg()]})

    assert (res.status_code, zipped.status_code, small.status_code) == (400, 400, 200)
    assert len(receiver.messages) == 1


def test_unknown_paths_and_methods_are_404(receiver: SegmentReceiver) -> None:
    assert raw_post(receiver, {"batch": [msg()]}, path="/v2/batch").status_code == 404
    assert requests.get(receiver.url + "/v1/batch", timeout=5).status_code == 404
    assert [r.status for r in receiver.requests] == [404, 404]
    assert receiver.messages == []


# ---------------------------------------------------------------------- fault injection


def test_fail_with_500_twice_then_success(receiver: SegmentReceiver) -> None:
    receiver.fail_with(500, times=2)
    m = msg()
    for _ in range(2):
        with pytest.raises(APIError) as err:
            post(KEY, host=receiver.url, batch=[m])
        assert err.value.status == 500
        assert err.value.code == "internal_error"
    post(KEY, host=receiver.url, batch=[m])

    assert [r.status for r in receiver.requests] == [500, 500, 200]
    # Failed attempts are recorded with their body, so retried content can be compared...
    assert [r.body["batch"] for r in receiver.requests if r.body] == [[m]] * 3
    # ...but only the accepted one counts as delivered.
    assert receiver.messages == [m]
    assert len(receiver.by_message_id()[m["messageId"]]) == 1


def test_fail_with_custom_body_until_healthy(receiver: SegmentReceiver) -> None:
    receiver.fail_with(503, body={"code": "overloaded", "message": "try later"})
    for _ in range(3):
        with pytest.raises(APIError) as err:
            post(KEY, host=receiver.url, batch=[msg()])
        assert (err.value.status, err.value.code, err.value.message) == (503, "overloaded", "try later")
    receiver.healthy()

    assert post(KEY, host=receiver.url, batch=[msg()]).status_code == 200


def test_429_carries_retry_after(receiver: SegmentReceiver) -> None:
    receiver.fail_with(429, times=1, retry_after=7)
    res = raw_post(receiver, {"batch": [msg()]})

    assert res.status_code == 429
    assert res.headers["Retry-After"] == "7"
    assert parse_retry_after(res) == 7  # the SDK's own parser understands it
    assert res.json()["code"] == "rate_limited"
    assert "Retry-After" not in raw_post(receiver, {"batch": [msg()]}).headers


def test_slow_delays_then_answers_normally(receiver: SegmentReceiver) -> None:
    receiver.slow(0.5, times=1)
    t0 = time.monotonic()
    res = post(KEY, host=receiver.url, batch=[msg()])
    slow_elapsed = time.monotonic() - t0
    t1 = time.monotonic()
    post(KEY, host=receiver.url, batch=[msg()])
    fast_elapsed = time.monotonic() - t1

    assert res.status_code == 200
    assert slow_elapsed >= 0.5
    assert fast_elapsed < 0.45  # times=1 was used up: the next request is not delayed
    assert len(receiver.messages) == 2


def test_slow_beyond_client_timeout_times_out(receiver: SegmentReceiver) -> None:
    receiver.slow(2.0, times=1)
    with pytest.raises(requests.Timeout):
        post(KEY, host=receiver.url, timeout=0.2, batch=[msg()])


def test_reset_gives_client_a_connection_reset(receiver: SegmentReceiver) -> None:
    # Warm the SDK's pooled keep-alive connection first, as in production.
    post(KEY, host=receiver.url, batch=[msg()])
    receiver.reset(times=1)

    with pytest.raises(requests.ConnectionError) as err:
        post(KEY, host=receiver.url, batch=[msg()])
    assert "reset" in str(err.value).lower()
    assert post(KEY, host=receiver.url, batch=[msg()]).status_code == 200
    assert [r.status for r in receiver.requests] == [200, 0, 200]
    assert len(receiver.messages) == 2


def test_refuse_then_healthy_rebinds_same_port(receiver: SegmentReceiver) -> None:
    url, port = receiver.url, receiver.port
    post(KEY, host=url, batch=[msg()])  # leaves a keep-alive connection in the SDK's pool
    receiver.refuse()

    with pytest.raises(requests.ConnectionError):
        post(KEY, host=url, batch=[msg()])
    receiver.healthy()

    assert (receiver.url, receiver.port) == (url, port)
    assert post(KEY, host=url, batch=[msg()]).status_code == 200
    assert len(receiver.messages) == 2


def test_reject_messages_only_rejects_batches_with_a_match(receiver: SegmentReceiver) -> None:
    receiver.reject_messages(lambda m: m.get("event") == "Bad")
    good = [msg("Good"), msg("Fine")]
    ok = post(KEY, host=receiver.url, batch=good)
    with pytest.raises(APIError) as err:
        post(KEY, host=receiver.url, batch=[msg("Good"), msg("Bad")])

    assert ok.status_code == 200
    assert (err.value.status, err.value.code) == (400, "invalid_request")
    assert receiver.messages == good
    assert [r.status for r in receiver.requests] == [200, 400]


def test_faults_switch_from_another_thread_while_client_waits(receiver: SegmentReceiver) -> None:
    receiver.refuse()
    timer = threading.Timer(0.2, receiver.healthy)
    timer.start()
    try:
        deadline = time.monotonic() + 5
        while True:  # a crude client retry loop, bounded in time
            try:
                post(KEY, host=receiver.url, batch=[msg()])
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "receiver never came back"
                time.sleep(0.05)
    finally:
        timer.join(timeout=5)
    assert len(receiver.wait_for(1, timeout=1)) == 1


def chaos_run(receiver: SegmentReceiver, n: int, stall_floor: float) -> tuple[list[int], int]:
    """``n`` posts, each on its own connection (a reset kills it); returns the statuses seen by the
    client (0 for a reset) and how many 200 answers took at least ``stall_floor`` seconds."""
    statuses, slow_answers = [], 0
    for _ in range(n):
        start = time.monotonic()
        try:
            res = raw_post(receiver, {"batch": [msg()]}, headers={"Connection": "close"})
        except requests.ConnectionError:
            statuses.append(0)
            continue
        statuses.append(res.status_code)
        if res.status_code == 429:
            assert res.headers.get("Retry-After") == "1"
        if res.status_code == 200 and time.monotonic() - start >= stall_floor:
            slow_answers += 1
    return statuses, slow_answers


def test_chaos_mixes_faults_in_proportion_and_healthy_clears_it(receiver: SegmentReceiver) -> None:
    n, stall = 300, 0.05
    asked = {"reset": 0.1, "error": 0.2, "rate_limited": 0.1, "stall": 0.1}
    receiver.chaos(**asked, retry_after=1, stall_seconds=stall, seed=7)
    statuses, slow_answers = chaos_run(receiver, n, stall)
    counts = receiver.chaos_counts

    assert set(counts) == set(CHAOS_OUTCOMES) and sum(counts.values()) == n
    for outcome, p in {**asked, "normal": 1 - sum(asked.values())}.items():
        assert abs(counts[outcome] / n - p) < 0.07, (outcome, counts)
    # What the client saw is what was counted: a stall ends in a normal (and late) answer.
    assert statuses.count(0) == counts["reset"]
    assert statuses.count(500) == counts["error"]
    assert statuses.count(429) == counts["rate_limited"]
    assert statuses.count(200) == counts["stall"] + counts["normal"]
    assert slow_answers >= counts["stall"]
    assert [r.status for r in receiver.requests] == statuses
    assert len(receiver.messages) == statuses.count(200)

    # The same seed and the same requests give the same outcomes.
    with SegmentReceiver(write_key=KEY) as twin:
        twin.chaos(**asked, retry_after=1, stall_seconds=stall, seed=7)
        assert chaos_run(twin, n, stall)[0] == statuses

    receiver.healthy()
    after, _ = chaos_run(receiver, 20, stall)
    assert after == [200] * 20
    assert receiver.chaos_counts == counts  # kept for reading after the endpoint recovered
    receiver.clear()
    assert receiver.chaos_counts == dict.fromkeys(CHAOS_OUTCOMES, 0)


def test_chaos_leaves_explicit_faults_first_and_checks_its_arguments(receiver: SegmentReceiver) -> None:
    receiver.chaos(reset=0, error=1, rate_limited=0, stall=0, seed=1)
    receiver.fail_with(503, times=1)

    statuses = [raw_post(receiver, {"batch": [msg()]}).status_code for _ in range(3)]

    assert statuses == [503, 500, 500]
    assert receiver.chaos_counts == {**dict.fromkeys(CHAOS_OUTCOMES, 0), "error": 2}
    with pytest.raises(ValueError):
        receiver.chaos(reset=0.5, error=0.6)
    with pytest.raises(ValueError):
        receiver.chaos(stall=-0.1)
    with pytest.raises(ValueError):
        receiver.chaos(stall_seconds=-1)


# ---------------------------------------------------------------------- waiting and bookkeeping


def test_wait_for_returns_when_messages_arrive_from_another_thread(receiver: SegmentReceiver) -> None:
    sender = threading.Timer(0.1, lambda: post(KEY, host=receiver.url, batch=[msg(), msg()]))
    sender.start()
    try:
        t0 = time.monotonic()
        messages = receiver.wait_for(2, timeout=5)
        assert time.monotonic() - t0 < 4
    finally:
        sender.join(timeout=5)
    assert len(messages) == 2
    assert len(receiver.wait_for_requests(1, timeout=1)) == 1


def test_wait_for_timeout_raises_assertion_error_with_count(receiver: SegmentReceiver) -> None:
    post(KEY, host=receiver.url, batch=[msg()])
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match=r"at least 3 .* but 1 arrived"):
        receiver.wait_for(3, timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 2
    with pytest.raises(AssertionError, match=r"at least 5 request"):
        receiver.wait_for_requests(5, timeout=0.1)


def test_by_message_id_exposes_duplicates_and_clear_forgets(receiver: SegmentReceiver) -> None:
    m = msg()
    post(KEY, host=receiver.url, batch=[m])
    post(KEY, host=receiver.url, batch=[m, msg()])

    dupes = {mid: occ for mid, occ in receiver.by_message_id().items() if len(occ) > 1}
    assert list(dupes) == [m["messageId"]]
    receiver.clear()
    assert (receiver.requests, receiver.batches, receiver.messages) == ([], [], [])
    assert receiver.by_message_id() == {}


def test_stop_is_idempotent_and_port_requires_start() -> None:
    r = SegmentReceiver()
    with pytest.raises(RuntimeError):
        _ = r.url
    r.start()
    url = r.url
    r.stop()
    r.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(url + "/v1/batch", data=b"{}", timeout=2)


# ---------------------------------------------------------------------- CLI


def test_cli_receives_and_prints_summary_on_sigterm() -> None:
    pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "tests" / "segment_receiver.py"),
            "--port",
            "0",
            "--write-key",
            "cli-key",
            "--max-seconds",
            "30",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout = proc.stdout
        assert stdout is not None
        first_line: list[str] = []
        # readline() in a thread so a receiver that never prints cannot hang the test.
        reader = threading.Thread(target=lambda: first_line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=10)
        assert first_line and first_line[0].startswith("listening on http://127.0.0.1:"), first_line
        url = first_line[0].split("listening on ", 1)[1].strip()

        assert post("cli-key", host=url, batch=[msg(), msg()]).status_code == 200
        with pytest.raises(APIError):
            post("wrong", host=url, batch=[msg()])

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"requests": 2, "messages": 2}
    assert err == ""
