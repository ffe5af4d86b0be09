"""Run the example apps under real servers (gunicorn, uvicorn) on 127.0.0.1.

Every wait is bounded; a server that does not come up or go down in time fails the test
with its own output attached.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import secret_guard

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]


class Server:
    """A server process; ``stop()`` sends SIGTERM and waits for a clean exit."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], port: int, cwd: Path = ROOT) -> None:
        self.port = port
        self.argv = list(argv)
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = Path(env.get("SERVER_LOG", f"/tmp/segment-server-{port}.log"))
        secret_guard.watch(self.log_path)  # searched for the suite's secrets when the test ends
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            env=full_env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.exit_seconds: float | None = None
        self.gunicorn_workers = 0  # set by gunicorn(): wait_ready waits for each of them

    def wait_ready(self, path: str = "/health", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early ({self.proc.returncode}):\n{self.output()}")
            try:
                if self.get(path, timeout=2).status < 500:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"server not ready after {timeout}s:\n{self.output()}")
        while self.gunicorn_workers and not self._workers_booted():
            if time.monotonic() > deadline:
                raise AssertionError(f"gunicorn workers not booted after {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def _workers_booted(self) -> bool:
        """Every gunicorn worker has set up its own signal handlers.

        One worker answering is not enough: a SIGTERM that reaches a worker between its fork
        and its signal set-up goes to the master's handler it inherited and is lost, and the
        worker then lives until the graceful timeout. Workers catch SIGABRT, the master
        does not, so a worker that catches it is past its set-up.
        """
        children = _children(self.proc.pid)
        if len(children) < self.gunicorn_workers:
            return False
        return all(_catches(pid, signal.SIGABRT) for pid in children)

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            return Response(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()

    def get(self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> Response:
        return self.request("GET", path, headers, timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code (and records how long exit took)."""
        if self.proc.poll() is None:
            start = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                raise AssertionError(f"server ignored SIGTERM for {timeout}s:\n{self.output()}") from None
            self.exit_seconds = time.monotonic() - start
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        if not self._log.closed:
            self._log.close()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _catches(pid: int, signum: int) -> bool:
    """Does process ``pid`` have a handler for ``signum`` (its SigCgt mask in /proc)?"""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    except OSError:
        pass
    return False


def gunicorn(app: str, env: Mapping[str, str], *args: str, chdir: Path | None = None) -> Server:
    port = free_port()
    argv = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "20", *args]
    if chdir is not None:
        argv += ["--chdir", str(chdir)]
    argv.append(app)
    server = Server(argv, {**env, "SERVER_LOG": str(Path(env["TEST_TMP"]) / f"gunicorn-{port}.log")}, port)
    server.gunicorn_workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    return server


def uvicorn(app: str, env: Mapping[str, str], *args: str, app_dir: Path | None = None) -> Server:
    port = free_port()
    argv = [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--no-access-log", *args]
    if app_dir is not None:
        argv += ["--app-dir", str(app_dir)]
    argv.append(app)
    return Server(argv, {**env, "SERVER_LOG": str(Path(env["TEST_TMP"]) / f"uvicorn-{port}.log")}, port)
