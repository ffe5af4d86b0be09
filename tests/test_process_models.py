"""Every process model of SPEC 7: each child delivers on its own, nothing lost or doubled."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver
from servers import ROOT, Server, free_port, gunicorn, uvicorn

EXAMPLE = ROOT / "example_django"


# ---------------------------------------------------------------------- tasks (tracker())
def _task(args: tuple[str, int]) -> int:
    """What a Celery prefork task does: track outside any request, return at once."""
    import segment_middleware

    user, i = args
    segment_middleware.tracker(user_id=user).track("Task Ran", {"i": i, "pid": os.getpid()})
    return os.getpid()


@pytest.fixture
def task_env(receiver: SegmentReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configure through the environment, as a worker would; long interval: only exit flushes."""
    monkeypatch.setenv("SEGMENT_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("SEGMENT_HOST", receiver.url)
    monkeypatch.setenv("SEGMENT_LOCAL_STORE", str(tmp_path / "s.sqlite3"))


FORKING_WORKER = """
import multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor

import segment_middleware


def task(args):
    user, i = args
    segment_middleware.tracker(user_id=user).track("Task Ran", {"i": i, "pid": os.getpid()})
    return os.getpid()


if __name__ == "__main__":
    kind, url, store, key = sys.argv[1:]
    segment_middleware.configure(write_key=key, host=url, local_store=store, flush_interval=60)
    if kind == "pool":
        with multiprocessing.get_context("fork").Pool(2) as pool:
            pids = pool.map(task, [("pool", i) for i in range(10)])
            pool.close()
            pool.join()
    else:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as executor:
            pids = list(executor.map(task, [("executor", i) for i in range(10)]))
    print(" ".join(map(str, sorted(set(pids)))))
"""


@pytest.mark.parametrize("kind", ["pool", "executor"])
def test_forked_task_workers_deliver_on_exit(receiver: SegmentReceiver, tmp_path: Path, kind: str) -> None:
    """A plain script (its own interpreter: no framework set up) that configures, then forks
    a pool whose tasks track with a 60 s interval and return at once: only the workers' exit
    hooks can deliver."""
    script = tmp_path / "worker.py"
    script.write_text(FORKING_WORKER)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_") and k != "DJANGO_SETTINGS_MODULE"
    }
    done = subprocess.run(
        [sys.executable, str(script), kind, receiver.url, str(tmp_path / "s.sqlite3"), WRITE_KEY],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    pids = {int(pid) for pid in done.stdout.split()}
    msgs = receiver.wait_for(10, timeout=10)
    receiver.wait_answered()  # every sending process has exited: this is the final count
    assert sorted(m["properties"]["i"] for m in receiver.messages) == list(range(10))
    assert {m["userId"] for m in msgs} == {kind}
    assert {m["properties"]["pid"] for m in receiver.messages} <= pids
    assert all(len(v) == 1 for v in receiver.by_message_id().values())


def test_spawned_process_delivers_on_exit(receiver: SegmentReceiver, task_env: None) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as executor:
        list(executor.map(_task, [("spawned", i) for i in range(6)]))
    receiver.wait_for(6, timeout=15)
    receiver.wait_answered()  # the executor's workers have exited: this is the final count
    assert sorted(m["properties"]["i"] for m in receiver.messages) == list(range(6))


# ---------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def shop_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("shop") / "db.sqlite3"
    env = {**os.environ, "SHOP_DB": str(db), "DJANGO_SETTINGS_MODULE": "shop.settings"}
    for command in (["migrate", "--noinput"], ["seed_shop"]):
        subprocess.run(
            [sys.executable, str(EXAMPLE / "manage.py"), *command],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    return db


@pytest.fixture
def shop_env(shop_db: Path, receiver: SegmentReceiver, tmp_path: Path) -> dict[str, str]:
    return {
        "SHOP_DB": str(shop_db),
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "DJANGO_DEBUG": "0",
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": receiver.url,
        "SEGMENT_FLUSH_INTERVAL": "60",
        "SEGMENT_SHUTDOWN_TIMEOUT": "5",
        "SEGMENT_LOCAL_STORE": str(tmp_path / "spool.sqlite3"),
        "TEST_TMP": str(tmp_path),
    }


@pytest.fixture
def server_box() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.kill()


def hit(server: Server, count: int) -> None:
    for i in range(count):
        response = server.get(f"/?n={i}")
        assert response.status == 200, server.output()


def assert_each_once(receiver: SegmentReceiver, count: int) -> None:
    pages = [m for m in receiver.messages if m["type"] == "page"]
    seen = Counter(parse_qs(m["properties"]["search"][1:])["n"][0] for m in pages)
    assert seen == Counter(str(i) for i in range(count))
    assert all(len(v) == 1 for v in receiver.by_message_id().values())


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--workers", "2"], id="sync-no-preload"),
        pytest.param(
            ["--workers", "2", "--worker-class", "gthread", "--threads", "2", "--preload"],
            id="gthread-preload",
        ),
    ],
)
def test_gunicorn_models(
    receiver: SegmentReceiver, shop_env: dict[str, str], server_box: list[Server], args: list[str]
) -> None:
    server = gunicorn("shop.wsgi:application", shop_env, *args, chdir=EXAMPLE)
    server_box.append(server)
    server.wait_ready()
    hit(server, 20)
    assert receiver.messages == []
    assert server.stop() == 0
    assert_each_once(receiver, 20)


def test_uvicorn_two_workers(
    receiver: SegmentReceiver, shop_env: dict[str, str], server_box: list[Server]
) -> None:
    server = uvicorn("shop.asgi:application", shop_env, "--workers", "2", app_dir=EXAMPLE)
    server_box.append(server)
    server.wait_ready(timeout=60)
    hit(server, 20)
    assert receiver.messages == []
    assert server.stop() in (0, -signal.SIGTERM)
    assert_each_once(receiver, 20)


def test_runserver_autoreloader(
    receiver: SegmentReceiver, shop_env: dict[str, str], server_box: list[Server]
) -> None:
    """Django's runserver: the reloader parent and the serving child; Ctrl-C stops both."""
    port = free_port()
    server = Server(
        [sys.executable, str(EXAMPLE / "manage.py"), "runserver", f"127.0.0.1:{port}"],
        {**shop_env, "SERVER_LOG": str(Path(shop_env["TEST_TMP"]) / "runserver.log")},
        port,
    )
    server_box.append(server)
    server.wait_ready(timeout=60)
    hit(server, 10)
    assert receiver.messages == []
    started = time.monotonic()
    os.killpg(server.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    server.proc.wait(20)
    # The parent SIGKILLs the child 0.25 s after Ctrl-C: the child sends what it can in
    # that time and spools the rest (never the case on an idle machine, but CI is not one).
    from segment_middleware.store import Store

    store_path = shop_env["SEGMENT_LOCAL_STORE"]
    spooled = (
        {m.message["properties"]["search"] for m in Store(store_path).events(kind="spool")}
        if Path(store_path).exists()
        else set()
    )
    received = {m["properties"]["search"] for m in receiver.messages if m["type"] == "page"}
    assert received | spooled == {f"?n={i}" for i in range(10)}, (received, spooled, server.output())
    assert all(len(v) == 1 for v in receiver.by_message_id().values())
    took = time.monotonic() - started
    print(f"runserver Ctrl-C: {len(received)} received, {len(spooled)} spooled, {took:.2f} s")
    if not spooled:
        assert_each_once(receiver, 10)
