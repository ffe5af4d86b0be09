"""A pytest plugin (``conftest.py`` loads it): no test's logs or server output hold the
suite's write key or tokens.

After each phase of each test (setup, call, teardown) it searches:

- what pytest captured for that phase: the log records that reached its handler
  ("Captured log", tracebacks included) and the test's stdout and stderr;
- at teardown, what every server process of the session (``servers.Server`` registers
  its log file with :func:`watch`) wrote since the last test ended, read once the
  fixtures have stopped the test's own servers.

for the suite's secrets: ``helpers.WRITE_KEY`` (and the Basic auth it is sent as), and the
string constants of the test's own module named like a secret (``KEY``, ``TOKEN``,
``SECRET``, ``PASSWORD``, alone or as a name's last word: ``PUBLIC_API_TOKEN``), so a
module's fixed token is covered by being defined. A phase whose text holds one fails,
naming the constant and the section; in that report the secret's text is replaced by its
name, so the failure does not print it either. A test that fails for its own reason with
a secret in its traceback gets it hidden there too, and a section saying so.

It costs a substring search per secret over text pytest has already captured: nothing is
formatted that pytest did not format anyway. So records below a logger's level are never
seen (the package's DEBUG lines only where a test lowers the level, as test_hardening.py
does); ``segment_middleware.logs.secret_filter`` covers those at run time.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Generator, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import WRITE_KEY

__all__ = ["find", "hide", "secrets_of", "watch"]

# The names of a module's constants that hold a secret: the last word of the name.
SECRET_NAME = re.compile(r"(?:^|_)(?:KEY|TOKEN|SECRET|PASSWORD)S?$")
MIN_LENGTH = 8  # shorter constants are not secrets anyone would grep a log for

SUITE: dict[str, str] = {
    WRITE_KEY: "helpers.WRITE_KEY",
    base64.b64encode(f"{WRITE_KEY}:".encode()).decode(): "helpers.WRITE_KEY as Basic auth",
}

_watched: dict[Path, int] = {}  # a server's output -> how much of it was searched
_active = False  # set while pytest runs with this plugin: watch() is a no-op elsewhere
_by_module: dict[str, dict[str, str]] = {}


def watch(path: Path) -> None:
    """Search what is written to ``path`` (a server's output) when each test ends."""
    if _active:
        _watched[path] = 0


def _new_output() -> list[tuple[str, str]]:
    """What the watched files gained since the last call."""
    found = []
    for path, searched in list(_watched.items()):
        try:
            if path.stat().st_size <= searched:
                continue
            with path.open("rb") as file:
                file.seek(searched)
                data = file.read()
        except OSError:  # in a test's temporary directory, removed since
            del _watched[path]
            continue
        _watched[path] = searched + len(data)
        found.append((f"server output {path.name}", data.decode("utf-8", "replace")))
    return found


def secrets_of(module: ModuleType | None) -> dict[str, str]:
    """Secret text -> the name shown instead: the suite's, and ``module``'s own constants."""
    if module is None:
        return SUITE
    found = _by_module.get(module.__name__)
    if found is None:
        found = dict(SUITE)
        for name, value in vars(module).items():
            if SECRET_NAME.search(name) and isinstance(value, str) and len(value) >= MIN_LENGTH:
                found.setdefault(value, f"{module.__name__}.{name}")
        # Longest first: a secret that contains another is named (and hidden) whole.
        found = dict(sorted(found.items(), key=lambda item: -len(item[0])))
        _by_module[module.__name__] = found
    return found


def find(text: str, secrets: dict[str, str]) -> list[str]:
    """The names of the secrets ``text`` holds."""
    return [name for secret, name in secrets.items() if secret in text]


def hide(text: str, secrets: dict[str, str]) -> str:
    for secret, name in secrets.items():
        text = text.replace(secret, f"<{name}>")
    return text


def _leaks(sections: Iterable[tuple[str, str]], secrets: dict[str, str]) -> list[str]:
    return [f"{', '.join(names)} in {title!r}" for title, text in sections if (names := find(text, secrets))]


def pytest_configure(config: pytest.Config) -> None:
    global _active
    _active = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    secrets = secrets_of(getattr(item, "module", None))
    # This phase's own sections: a report carries those of the earlier phases too.
    own = [(title, text) for title, text in report.sections if title.endswith(f" {report.when}")]
    if report.when == "teardown":
        own += _new_output()
    leaks = _leaks(own, secrets)
    if report.failed and report.longrepr is not None and (names := find(str(report.longrepr), secrets)):
        report.longrepr = hide(str(report.longrepr), secrets)
        report.sections.append(("secrets", f"the failure's own message held {', '.join(names)} (hidden)"))
    if not leaks:
        return
    report.sections = [(title, hide(text, secrets)) for title, text in report.sections]
    message = "a secret of the suite appears in the test's output: " + "; ".join(leaks)
    if report.passed:
        report.outcome = "failed"
        report.longrepr = message
    else:
        report.sections.append(("secrets", message))
