"""Celery tasks (found by the app's ``autodiscover_tasks``)."""

from celery import shared_task

from .work import confirm_order


@shared_task(name="jobsite.confirm_order")
def confirm_order_task(order_id: str, fail: bool = False) -> str:
    return confirm_order("celery", order_id, fail)
