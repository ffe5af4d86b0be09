"""Django's tasks framework: our ``task`` decorator in place of Django's (the one line)."""

from segment_middleware.django.tasks import task

from .work import confirm_order


@task
def confirm_order_dtask(order_id: str, fail: bool = False) -> str:
    return confirm_order("django", order_id, fail)
