"""Views that enqueue a job while the request is being tracked."""

from django.http import HttpRequest, HttpResponse

from .tasks import confirm_order_task


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def celery_checkout(request: HttpRequest) -> HttpResponse:
    confirm_order_task.delay(request.GET["order"], fail=request.GET.get("fail") == "1")
    return HttpResponse("queued")


def rq_checkout(request: HttpRequest) -> HttpResponse:
    from .rq_jobs import confirm_order_job, queue

    queue().enqueue(confirm_order_job, request.GET["order"], fail=request.GET.get("fail") == "1")
    return HttpResponse("queued")


def django_checkout(request: HttpRequest) -> HttpResponse:
    from .dtasks import confirm_order_dtask

    confirm_order_dtask.enqueue(request.GET["order"], fail=request.GET.get("fail") == "1")
    return HttpResponse("queued")
