"""``manage.py enqueue_outside celery|rq|django ORDER``: a script enqueuing outside any request."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Enqueue one confirm_order job outside a request."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("runner", choices=["celery", "rq", "django"])
        parser.add_argument("order")

    def handle(self, *args: Any, runner: str, order: str, **options: Any) -> None:
        if runner == "celery":
            from jobsite.tasks import confirm_order_task

            confirm_order_task.delay(order)
        elif runner == "rq":
            from jobsite.rq_jobs import confirm_order_job, queue

            queue().enqueue(confirm_order_job, order)
        else:
            from jobsite.dtasks import confirm_order_dtask

            confirm_order_dtask.enqueue(order)
