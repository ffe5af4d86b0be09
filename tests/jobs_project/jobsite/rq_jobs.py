"""RQ: the job function, and the queue the project enqueues on (our Job class)."""

from django.conf import settings
from redis import Redis
from rq import Queue

from segment_middleware.rq import Job

from .work import confirm_order


def confirm_order_job(order_id: str, fail: bool = False) -> str:
    return confirm_order("rq", order_id, fail)


def queue() -> Queue:
    return Queue("jobs", connection=Redis.from_url(settings.REDIS_URL), job_class=Job)
