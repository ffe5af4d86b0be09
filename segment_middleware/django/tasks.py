"""Django's tasks framework: tasks enqueued during a request run as that request's visitor.

``django.tasks`` (Django 6.0+), else the ``django-tasks`` backport (module ``django_tasks``,
with ``django-tasks-db``'s database backend and ``manage.py db_worker``). Neither has a
place for data of ours beside a task's arguments: a ``TaskResult`` has no metadata and
the signals (``task_enqueued``, ``task_started``) see the task only after it is stored.
So the one line is our ``task`` decorator in place of Django's::

    from segment_middleware.django.tasks import task  # instead of: from django.tasks import task

    @task(priority=2)
    def send_confirmation(order_id: str) -> None:
        segment_middleware.current().track("Order Confirmation Sent", {"order_id": order_id})

It is Django's decorator (every option, any backend, the backend's own Task class) with two
additions: ``enqueue()`` / ``aenqueue()`` add the keyword ``_segment`` with the enqueuing
request's visitor (``jobs.carry()``, JSON, already redacted; None outside a request), and
the function runs inside ``jobs.running(...)`` when called with it. The keyword is visible
in ``TaskResult.kwargs``; ``task.call()`` without it runs the function as it is.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from .. import jobs

try:  # Django 6.0+
    from django.tasks import task as _django_task
    from django.tasks.base import Task as _DjangoTask
except ImportError:  # the backport
    try:
        from django_tasks import task as _django_task  # type: ignore[no-redef]
        from django_tasks.base import Task as _DjangoTask  # type: ignore[no-redef,assignment]
    except ImportError:
        raise ImportError(
            "segment_middleware.django.tasks needs django.tasks (Django 6.0+) or the django-tasks package"
        ) from None

__all__ = ["PARAM", "Task", "task"]

PARAM = "_" + jobs.KEY  # the keyword a task's visitor travels in


class _Carrying:
    """Mixed into the backend's Task class: enqueueing adds the visitor."""

    def enqueue(self, *args: Any, **kwargs: Any) -> Any:
        kwargs[PARAM] = jobs.carry()
        return super().enqueue(*args, **kwargs)  # type: ignore[misc]

    async def aenqueue(self, *args: Any, **kwargs: Any) -> Any:
        kwargs[PARAM] = jobs.carry()
        return await super().aenqueue(*args, **kwargs)  # type: ignore[misc]


_classes: dict[Any, type[Any]] = {}  # a backend's Task class -> it with _Carrying mixed in


def _carrying(task_class: Any) -> type[Any]:
    made = _classes.get(task_class)
    if made is None:
        made = _classes[task_class] = type(
            task_class.__name__, (_Carrying, task_class), {"__module__": __name__}
        )
    return made


def _as_visitor(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` that runs as the visitor passed in ``PARAM`` (when passed). The wrapper keeps
    the name, module and qualname: workers find the task again by that dotted path."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            if PARAM not in kwargs:
                return await func(*args, **kwargs)
            with jobs.running(kwargs.pop(PARAM)):
                return await func(*args, **kwargs)

        return run_async

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        if PARAM not in kwargs:
            return func(*args, **kwargs)
        with jobs.running(kwargs.pop(PARAM)):
            return func(*args, **kwargs)

    return run


def task(function: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Django's ``@task`` / ``@task(...)``, carrying the enqueuing request's visitor."""

    def decorate(func: Callable[..., Any]) -> Any:
        made = _django_task(_as_visitor(func), **options)
        fields = {name: getattr(made, name) for name in made.__dataclass_fields__}
        return _carrying(type(made))(**fields)

    return decorate(function) if function is not None else decorate


Task = _DjangoTask  # for annotations: what ``task`` returns is a subclass of it
