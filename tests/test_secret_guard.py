"""The suite's guard against secrets in logs (``secret_guard.py``) can fail: a test that
logs the write key, prints a module's token or runs a server that prints one fails, and
its report names the constant without showing its text; a test that logs nothing secret
passes."""

from __future__ import annotations

import base64
import logging
import types
from pathlib import Path

import pytest
import secret_guard
from helpers import WRITE_KEY

TESTS = Path(__file__).resolve().parent

LEAKY = """
import base64
import logging
from pathlib import Path

import secret_guard
from helpers import WRITE_KEY

PUBLIC_API_TOKEN = "sgp_guard-test-token-42"


def test_logs_the_key():
    logging.getLogger("segment_middleware").warning("sending with %s", WRITE_KEY)


def test_prints_the_modules_token():
    print("Authorization: Bearer", PUBLIC_API_TOKEN)


def test_logs_the_basic_auth_header():
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    logging.getLogger("urllib3").error("Authorization: Basic %s", basic)


def test_a_server_prints_the_key(tmp_path):
    out = Path(__file__).parent / "server.log"
    out.write_text("")
    secret_guard.watch(out)
    out.write_text(f"starting with key {WRITE_KEY}\\n")


def test_fails_and_logs_the_key():
    logging.getLogger("segment_middleware").error("oops %s", WRITE_KEY)
    assert False, "its own failure, with " + WRITE_KEY


def test_logs_nothing_secret():
    logging.getLogger("segment_middleware").warning("segment: events go to the local store")
    print("a write key is set")
"""


def test_a_leak_fails_the_test_and_is_not_printed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the plugin and helpers, for the run below
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest_subprocess("-p", "secret_guard", "-rA", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    # Three leaks in a test's own phase fail it (a fourth failed by itself); the server's
    # output fails the teardown of a test that passed.
    assert outcomes == {"failed": 4, "passed": 2, "errors": 1}, result.stdout.str()[-3000:]
    text = result.stdout.str() + result.stderr.str()
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    assert WRITE_KEY not in text and basic not in text and "sgp_guard-test-token-42" not in text
    said = "a secret of the suite appears in the test's output: "
    for leak in (
        "helpers.WRITE_KEY in 'Captured log call'",
        "test_leaky.PUBLIC_API_TOKEN in 'Captured stdout call'",
        "helpers.WRITE_KEY as Basic auth in 'Captured log call'",
        "helpers.WRITE_KEY in 'server output server.log'",
    ):
        assert said + leak in text, leak
    assert "sending with <helpers.WRITE_KEY>" in text  # the section is shown, the key hidden
    assert "oops <helpers.WRITE_KEY>" in text  # also in a test that failed by itself
    assert "its own failure, with <helpers.WRITE_KEY>" in text  # its traceback too


def test_find_and_hide_name_the_secret() -> None:
    module = types.ModuleType("sample")
    module.PROFILES_TOKEN = "profiles-token-1234"  # type: ignore[attr-defined]
    module.TOKEN = "short"  # type: ignore[attr-defined]  # under MIN_LENGTH: not a secret
    module.KEYBOARD = "not-a-secret-name"  # type: ignore[attr-defined]
    secrets = secret_guard.secrets_of(module)
    assert set(secrets.values()) == {
        "helpers.WRITE_KEY",
        "helpers.WRITE_KEY as Basic auth",
        "sample.PROFILES_TOKEN",
    }
    line = f"token profiles-token-1234 and key {WRITE_KEY}"
    assert sorted(secret_guard.find(line, secrets)) == ["helpers.WRITE_KEY", "sample.PROFILES_TOKEN"]
    assert secret_guard.hide(line, secrets) == "token <sample.PROFILES_TOKEN> and key <helpers.WRITE_KEY>"


def test_this_suites_own_logs_are_searched(caplog: pytest.LogCaptureFixture) -> None:
    """The guard runs here too: logging a harmless line passes (a leak here would fail the
    suite, which the pytester run above shows)."""
    logging.getLogger("segment_middleware").warning("segment: nothing secret")
    assert secret_guard._active
