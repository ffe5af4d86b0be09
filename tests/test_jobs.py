"""Background jobs carry the visitor: Celery, RQ (and Django's tasks) under real workers.

The end-to-end tests run ``tests/jobs_project`` (a small Django project whose Segment
settings point at the receiver, with a 60 s flush interval) under a real gunicorn, and a
real worker: Celery's prefork pool on kombu's filesystem broker, RQ on a real
``redis-server`` the test starts on 127.0.0.1. A view enqueues a job; the job's
``current()`` sends ``Order Confirmed`` (``Job Without Visitor`` through ``tracker()``
when ``current()`` is None). Each job leaves a marker file, the condition the test waits
on before it stops the worker; with the long flush interval, what the receiver gets was
sent by the worker's own shutdown flush (or the RQ work horse's after its job).

The unit-level tests drive the integrations in this process: the carried dict's trip
through JSON and pickle, malformed carried values, and ``current()`` after a job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

from helpers import WRITE_KEY, wait_until
from segment_receiver import SegmentReceiver
from servers import BIN, ROOT, Server, free_port, gunicorn
from visits import BROWSER

import segment_middleware
from segment_middleware import jobs

PROJECT = ROOT / "tests" / "jobs_project"
WAIT = 20.0  # seconds, for anything a worker does
SECRET = "s3cret-value"  # in the query: must never reach a broker or the receiver
VISITOR = "visitor-anon-7"
CHECKOUT_QUERY = f"token={SECRET}&utm_source=newsletter&utm_medium=email&utm_campaign=spring"


def wait_on(condition: Callable[[], bool], what: str, proc: Server | None = None) -> None:
    """``helpers.wait_until`` for a worker or server process: fail at once with its output
    when it exits, and show its output on a time-out."""

    def alive() -> str | None:
        if proc is not None and proc.proc.poll() is not None:
            return f"the process exited ({proc.proc.returncode}):\n{proc.output()}"
        return None

    try:
        wait_until(condition, what, WAIT, alive=alive)
    except AssertionError as exc:
        if proc is not None and "timed out" in str(exc):
            raise AssertionError(f"{exc}:\n{proc.output()}") from None
        raise


# ---------------------------------------------------------------------- the project
@pytest.fixture
def project_env(receiver: SegmentReceiver, tmp_path: Path) -> dict[str, str]:
    for folder in ("markers", "broker", "broker-control"):
        (tmp_path / folder).mkdir()
    return {
        "JOBS_TMP": str(tmp_path),
        "JOBS_WRITE_KEY": WRITE_KEY,
        "JOBS_SEGMENT_HOST": receiver.url,
        "DJANGO_SETTINGS_MODULE": "jobsite.settings",
        # Nothing configures Segment through the environment: a process that ignored the
        # project's settings would write here instead of sending to the receiver.
        "SEGMENT_LOCAL_STORE": str(tmp_path / "wrong-store.sqlite3"),
        "PYTHONPATH": str(PROJECT),
        "TEST_TMP": str(tmp_path),
    }


@pytest.fixture
def processes() -> Iterator[list[Server]]:
    """Every process a test starts; killed at the end whatever happened."""
    started: list[Server] = []
    yield started
    for proc in reversed(started):
        proc.kill()


def start(processes: list[Server], argv: list[str], env: dict[str, str], name: str) -> Server:
    log = str(Path(env["TEST_TMP"]) / f"{name}.log")
    proc = Server(argv, {**env, "SERVER_LOG": log}, port=0, cwd=PROJECT)
    processes.append(proc)
    return proc


def marker(env: dict[str, str], runner: str, order: str) -> Path:
    return Path(env["JOBS_TMP"]) / "markers" / f"{runner}-{order}"


def enqueue_outside(env: dict[str, str], runner: str, order: str) -> None:
    """A management command (no request) enqueues the job."""
    done = subprocess.run(
        [sys.executable, "manage.py", "enqueue_outside", runner, order],
        cwd=PROJECT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def checkout(web: Server, runner: str, order: str, fail: bool = False) -> None:
    headers = {**BROWSER, "Cookie": f"ajs_anonymous_id=%22{VISITOR}%22", "X-Test-User": "user-42"}
    target = f"/{runner}/checkout/?order={order}&{CHECKOUT_QUERY}" + ("&fail=1" if fail else "")
    response = web.get(target, headers)
    assert response.status == 200, (response.status, web.output())


def tracks(receiver: SegmentReceiver) -> dict[str, dict[str, Any]]:
    """The jobs' track calls by order id (each must arrive once)."""
    found: dict[str, dict[str, Any]] = {}
    for message in receiver.messages:
        if message["type"] == "track":
            order = message["properties"]["order_id"]
            assert order not in found, f"order {order} tracked twice"
            found[order] = message
    return found


def check_carried(track: dict[str, Any], page: dict[str, Any]) -> None:
    """A job's track call is the request's visitor with the request's (redacted) context."""
    assert track["event"] == "Order Confirmed"
    assert track["userId"] == "user-42"
    assert track["anonymousId"] == VISITOR
    context = track["context"]
    assert context["ip"] == "127.0.0.0", "ANONYMIZE_IP applies to the carried address too"
    assert context["userAgent"] == BROWSER["User-Agent"]
    assert context["locale"] == "fr-FR"
    assert context["campaign"] == {"source": "newsletter", "medium": "email", "name": "spring"}
    assert "token=" in context["page"]["url"] and SECRET not in json.dumps(track)
    for key in ("ip", "userAgent", "locale", "campaign", "page"):
        assert context[key] == page["context"][key], key


def page_for(receiver: SegmentReceiver, order: str) -> dict[str, Any]:
    (page,) = [
        m for m in receiver.messages if m["type"] == "page" and f"order={order}&" in m["properties"]["url"]
    ]
    return page


# ---------------------------------------------------------------------- Celery
def test_celery_prefork_worker_runs_tasks_as_the_enqueuing_visitor(
    receiver: SegmentReceiver, project_env: dict[str, str], processes: list[Server]
) -> None:
    """A task enqueued by a view runs in a prefork child as the view's visitor; one
    enqueued by a management command runs with current() None, in the same child after a
    task that raised; the worker's SIGTERM delivers what its tasks queued."""
    pytest.importorskip("celery")
    web = gunicorn("jobsite.wsgi:application", project_env, chdir=PROJECT)
    processes.append(web)
    worker = start(
        processes,
        [
            str(BIN / "celery"),
            "-A",
            "jobsite",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "1",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
        ],
        project_env,
        "celery",
    )
    web.wait_ready()
    checkout(web, "celery", "c-1")
    checkout(web, "celery", "c-2", fail=True)
    wait_on(lambda: marker(project_env, "celery", "c-2").exists(), "the tasks enqueued by views", worker)
    enqueue_outside(project_env, "celery", "c-3")
    wait_on(lambda: marker(project_env, "celery", "c-3").exists(), "the task enqueued outside", worker)
    assert receiver.messages == [], "with a 60 s flush interval only the shutdown flush sends"

    assert worker.stop(timeout=WAIT) == 0, worker.output()
    receiver.wait_for(3, timeout=WAIT)
    assert web.stop(timeout=WAIT) == 0
    receiver.wait_for(5, timeout=WAIT)  # and the two page calls

    by_order = tracks(receiver)
    assert set(by_order) == {"c-1", "c-2", "c-3"}
    check_carried(by_order["c-1"], page_for(receiver, "c-1"))
    check_carried(by_order["c-2"], page_for(receiver, "c-2"))
    outside = by_order["c-3"]
    assert outside["event"] == "Job Without Visitor" and "userId" not in outside
    assert "page" not in outside["context"] and "ip" not in outside["context"]
    pids = {order: m["properties"]["pid"] for order, m in by_order.items()}
    assert worker.proc.pid not in pids.values(), "prefork: tasks run in a child process"
    assert pids["c-2"] == pids["c-3"], "the task that raised left current() None for the next"
    assert len([m for m in receiver.messages if m["type"] == "page"]) == 2, "a task makes no page call"
    assert SECRET not in worker.output()


# ---------------------------------------------------------------------- RQ
@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of the test's own on a free 127.0.0.1 port, stopped at the end."""
    redis = pytest.importorskip("redis")
    exe = shutil.which("redis-server")
    if exe is None:
        reason = "redis-server is not on PATH (scripts/jobs-deps installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""]
    with open(data / "redis.log", "wb") as log:
        proc = subprocess.Popen(
            [*argv, "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

        def answers() -> bool:
            assert proc.poll() is None, (data / "redis.log").read_text()
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_until(answers, "redis-server")
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("worker_class", ["Worker", "SimpleWorker"])
def test_rq_worker_runs_jobs_as_the_enqueuing_visitor(
    receiver: SegmentReceiver,
    project_env: dict[str, str],
    processes: list[Server],
    redis_url: str,
    worker_class: str,
) -> None:
    """``Worker``: each job in a forked work horse, which delivers before its os._exit
    (nothing else could send within the 60 s flush interval). ``SimpleWorker``: jobs in
    the worker process, delivered by its SIGTERM, and a job that raised leaves current()
    None for the next one."""
    pytest.importorskip("rq")
    env = {**project_env, "JOBS_REDIS_URL": redis_url}
    web = gunicorn("jobsite.wsgi:application", env, chdir=PROJECT)
    processes.append(web)
    worker = start(
        processes,
        [
            str(BIN / "rq"),
            "worker",
            "--config",
            "jobsite.rqconfig",
            "--path",
            str(PROJECT),
            "--worker-class",
            f"segment_middleware.rq.{worker_class}",
            "jobs",
        ],
        env,
        f"rq-{worker_class}",
    )
    web.wait_ready()
    checkout(web, "rq", "r-1")
    checkout(web, "rq", "r-2", fail=True)
    wait_on(lambda: marker(env, "rq", "r-2").exists(), "the jobs enqueued by views", worker)
    enqueue_outside(env, "rq", "r-3")
    wait_on(lambda: marker(env, "rq", "r-3").exists(), "the job enqueued outside", worker)

    if worker_class == "Worker":
        receiver.wait_for(3, timeout=WAIT)  # each horse flushed before its os._exit
        assert worker.stop(timeout=WAIT) == 0, worker.output()
    else:
        # The marker is written after the track call, so it is queued by now; only the
        # worker's exit flush can send it.
        assert receiver.messages == []
        assert worker.stop(timeout=WAIT) == 0, worker.output()
        receiver.wait_for(3, timeout=WAIT)
    assert web.stop(timeout=WAIT) == 0
    receiver.wait_for(5, timeout=WAIT)

    by_order = tracks(receiver)
    assert set(by_order) == {"r-1", "r-2", "r-3"}
    check_carried(by_order["r-1"], page_for(receiver, "r-1"))
    check_carried(by_order["r-2"], page_for(receiver, "r-2"))
    outside = by_order["r-3"]
    assert outside["event"] == "Job Without Visitor" and "userId" not in outside
    assert "page" not in outside["context"]
    pids = {order: m["properties"]["pid"] for order, m in by_order.items()}
    if worker_class == "Worker":
        assert worker.proc.pid not in pids.values() and len(set(pids.values())) == 3, "a horse per job"
    else:
        assert set(pids.values()) == {worker.proc.pid}
    assert len([m for m in receiver.messages if m["type"] == "page"]) == 2, "a job makes no page call"
    assert not Path(env["SEGMENT_LOCAL_STORE"]).exists(), "every process used the project's settings"


# ---------------------------------------------------------------------- Django tasks
def test_django_tasks_db_worker_runs_tasks_as_the_enqueuing_visitor(
    receiver: SegmentReceiver, project_env: dict[str, str], processes: list[Server]
) -> None:
    """django-tasks' database backend and its real ``db_worker``: the task runs as the
    view's visitor, one enqueued by a command with current() None; the worker's SIGTERM
    delivers what its tasks queued."""
    pytest.importorskip("django_tasks", reason="the django-tasks package (Django < 6.0) is not installed")
    pytest.importorskip("django_tasks_db", reason="django-tasks-db (the database backend) is not installed")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=PROJECT,
        env={**os.environ, **project_env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    web = gunicorn("jobsite.wsgi:application", project_env, chdir=PROJECT)
    processes.append(web)
    worker = start(
        processes,
        [sys.executable, "manage.py", "db_worker", "--interval", "0.1", "--no-startup-delay"],
        project_env,
        "db_worker",
    )
    web.wait_ready()
    checkout(web, "django", "d-1")
    checkout(web, "django", "d-2", fail=True)
    wait_on(lambda: marker(project_env, "django", "d-2").exists(), "the tasks enqueued by views", worker)
    enqueue_outside(project_env, "django", "d-3")
    wait_on(lambda: marker(project_env, "django", "d-3").exists(), "the task enqueued outside", worker)
    assert receiver.messages == [], "with a 60 s flush interval only the shutdown flush sends"

    assert worker.stop(timeout=WAIT) == 0, worker.output()
    receiver.wait_for(3, timeout=WAIT)
    assert web.stop(timeout=WAIT) == 0
    receiver.wait_for(5, timeout=WAIT)

    by_order = tracks(receiver)
    assert set(by_order) == {"d-1", "d-2", "d-3"}
    check_carried(by_order["d-1"], page_for(receiver, "d-1"))
    check_carried(by_order["d-2"], page_for(receiver, "d-2"))
    outside = by_order["d-3"]
    assert outside["event"] == "Job Without Visitor" and "userId" not in outside
    assert "page" not in outside["context"]
    assert {m["properties"]["pid"] for m in by_order.values()} == {worker.proc.pid}
    assert len([m for m in receiver.messages if m["type"] == "page"]) == 2, "a task makes no page call"


# ---------------------------------------------------------------------- in process
@pytest.fixture
def in_request() -> Iterator[Callable[[Callable[[], Any]], Any]]:
    """Run a function as the view of a tracked request (a WSGI app, in this process)."""
    from segment_middleware.testing import capture
    from segment_middleware.wsgi import SegmentWSGIMiddleware

    def run(view: Callable[[], Any]) -> Any:
        result: list[Any] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            result.append(view())
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        wrapped = SegmentWSGIMiddleware(app, lambda environ: "user-9", write_key=WRITE_KEY, anonymize_ip=True)
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/checkout",
            "QUERY_STRING": CHECKOUT_QUERY,
            "SERVER_NAME": "shop.example",
            "SERVER_PORT": "443",
            "wsgi.url_scheme": "https",
            "REMOTE_ADDR": "203.0.113.77",
            "HTTP_USER_AGENT": BROWSER["User-Agent"],
            "HTTP_ACCEPT_LANGUAGE": "fr-FR,fr;q=0.8",
            "HTTP_COOKIE": f"ajs_anonymous_id=%22{VISITOR}%22",
        }
        list(wrapped(environ, lambda status, headers, exc_info=None: None))
        return result[0]

    with capture():
        yield run


def test_carried_visitor_survives_json_and_pickle(in_request: Callable[[Callable[[], Any]], Any]) -> None:
    from segment_middleware.testing import capture

    carried = in_request(jobs.carry)
    assert carried is not None and SECRET not in json.dumps(carried)
    assert jobs.carry() is None, "outside a request nothing is carried"
    for trip in (lambda c: json.loads(json.dumps(c)), lambda c: pickle.loads(pickle.dumps(c))):
        with capture() as events:
            with jobs.running(trip(carried)) as tracker:
                assert segment_middleware.current() is tracker is not None
                tracker.track("Order Confirmed", {"order_id": "o-1"})
            assert segment_middleware.current() is None
        (track,) = events.tracks("Order Confirmed")
        assert (track["userId"], track["anonymousId"]) == ("user-9", VISITOR)
        assert track["context"]["ip"] == "203.0.113.0"
        assert track["context"]["campaign"]["name"] == "spring"
        assert "page" not in [m["type"] for m in events], "a job makes no page call"


MALFORMED = [1, "visitor", [VISITOR], {"v": 1}, {"v": 99, "anonymousId": VISITOR}, {"v": 1, "facts": "x"}]


@pytest.mark.parametrize("carried", MALFORMED, ids=[repr(m)[:20] for m in MALFORMED])
def test_a_malformed_carried_value_runs_the_rq_job_without_a_visitor(
    carried: object, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("rq")
    from segment_middleware.rq import Job

    job = Job.create(segment_middleware.current, connection=_no_redis())
    job.meta[jobs.KEY] = carried
    with caplog.at_level(logging.WARNING, logger="segment_middleware"):
        assert job.perform() is None
    assert VISITOR not in caplog.text


def _no_redis() -> Any:
    """A connection object for jobs that are created and performed, never saved."""
    import redis

    return redis.Redis(host="127.0.0.1", port=free_port())


_SEEN: list[Any] = []


def _record_current(fail: bool) -> None:
    """An RQ job function (importable by name, as RQ needs)."""
    _SEEN.append(segment_middleware.current())
    if fail:
        raise RuntimeError("on purpose")


def test_rq_job_restores_current_after_it_ran_also_when_it_raised(
    in_request: Callable[[Callable[[], Any]], Any],
) -> None:
    pytest.importorskip("rq")
    from segment_middleware.rq import Job

    seen = _SEEN
    seen.clear()
    task = _record_current
    connection = _no_redis()
    made = in_request(lambda: [Job.create(task, args=[f], connection=connection) for f in (False, True)])
    assert all(jobs.KEY in job.meta for job in made)
    outside = Job.create(task, args=[False], connection=connection)
    assert jobs.KEY not in outside.meta
    made[0].perform()
    with pytest.raises(RuntimeError):
        made[1].perform()
    outside.perform()
    assert [t.anonymous_id for t in seen[:2]] == [VISITOR, VISITOR]
    assert seen[2] is None and segment_middleware.current() is None


def test_celery_task_restores_current_after_it_ran_also_when_it_raised(
    in_request: Callable[[Callable[[], Any]], Any],
) -> None:
    """A real Celery worker in this process (a thread, memory broker): the task published
    in a request sees its visitor, the next (published outside) sees None after it raised."""
    pytest.importorskip("celery")
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    import segment_middleware.celery

    segment_middleware.celery.install()
    segment_middleware.celery.install()  # idempotent
    app = Celery("jobs-unit", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_default_queue = f"jobs-unit-{os.getpid()}"
    seen: list[Any] = []

    @app.task(name="jobs_unit.record")
    def record(fail: bool) -> None:
        seen.append(segment_middleware.current())
        if fail:
            raise RuntimeError("on purpose")

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=WAIT):
        results = in_request(lambda: [record.delay(False), record.delay(True)])
        with contextlib.suppress(RuntimeError):
            for result in results:
                result.get(timeout=WAIT)
        record.delay(False).get(timeout=WAIT)
    assert [t.anonymous_id for t in seen[:2]] == [VISITOR, VISITOR]
    assert seen[2] is None and segment_middleware.current() is None
