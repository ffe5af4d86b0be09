"""``rq worker -c jobsite.rqconfig``: set Django up (as django-rq's ``rqworker`` does), so
jobs, and the tracker they get, use the project's settings."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")
django.setup()

from django.conf import settings  # noqa: E402

REDIS_URL = settings.REDIS_URL
