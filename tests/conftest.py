"""Shared fixtures: a real Segment-compatible receiver on 127.0.0.1, a temp store."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
from segment_receiver import SegmentReceiver
from servers import Server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import WRITE_KEY  # noqa: E402  (needs the sys.path line above)

from segment_middleware import ambient  # noqa: E402
from segment_middleware.core import Runtime  # noqa: E402
from segment_middleware.settings import Settings  # noqa: E402

# Hypothesis never times an example: on a loaded 2-core machine its default 200 ms deadline
# fails tests that are only slow (a test's own @settings may still set more examples).
hypothesis.settings.register_profile("suite", deadline=None)
hypothesis.settings.load_profile("suite")

# A user's project in miniature, with its own Django settings: test_testing_helpers runs
# it in a subprocess; collecting it here would load its conftest into this process.
collect_ignore = ["sample_project"]

# secret_guard: no test's logs or server output hold the suite's write key or tokens;
# pytester: test_secret_guard.py runs a test that leaks one on purpose.
pytest_plugins = ["pytester", "secret_guard"]

# Tests press Ctrl-C (SIGINT) on the servers and CLI commands they start. A shell without
# job control starts background commands with SIGINT ignored, and an ignored signal is
# inherited across exec: those children could not be interrupted. A handler here is reset
# to the default in each child, where Python installs its KeyboardInterrupt again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def receiver() -> Iterator[SegmentReceiver]:
    with SegmentReceiver(WRITE_KEY) as server:
        yield server


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[SegmentReceiver, Path]]:
    """The receiver over https, with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *files, *subject],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with SegmentReceiver(WRITE_KEY, tls=context) as server:
        yield server, cert


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "events.sqlite3")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit a developer's real Segment configuration."""
    for key in list(os.environ):
        if key.startswith("SEGMENT_"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(autouse=True)
def _package_logs_reach_caplog() -> Iterator[None]:
    """A test that loads example_django's settings leaves the package logger with its
    own handler and propagate off; later tests asserting on caplog must still see it."""
    logger = logging.getLogger("segment_middleware")
    saved = logger.propagate, logger.disabled, logging.root.level
    logger.propagate, logger.disabled = True, False
    yield
    # A worker started in process (Celery's start_worker) sets up logging as a worker
    # would: the root logger at ERROR and existing loggers disabled, which would silence
    # the package's warnings for every later test.
    logger.propagate, logger.disabled, logging.root.level = saved


def pytest_collection_finish(session: pytest.Session) -> None:
    """Test modules name their in-process Django settings in DJANGO_SETTINGS_MODULE while
    they are collected; Django reads it once, at ``django.setup()``. The processes tests
    start (the CLI, servers, benchmarks) must not inherit it: it names a module only this
    process can import, and the CLI reads a Django project's settings when it is set."""
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)


@pytest.fixture
def local_runtime(store_path: str) -> Iterator[Runtime]:
    """A runtime on the local store (no write key), flushing quickly; shut down after."""
    rt = Runtime(Settings.from_sources({"local_store": store_path, "flush_interval": 0.05}, environ={}))
    yield rt
    rt.delivery.shutdown(2)


@pytest.fixture(autouse=True)
def _keep_ambient_runtime() -> Iterator[None]:
    """configure() calls a test makes must not become what later tests' tracker() uses."""
    before = ambient._configured
    yield
    ambient._configured = before


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts (append them): killed at its end, whatever happened."""
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()
