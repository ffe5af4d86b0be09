"""The project's Celery app, the way Celery's Django guide writes it, plus our one line."""

import os

from celery import Celery

import segment_middleware.celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")

app = Celery("jobsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

segment_middleware.celery.install()
