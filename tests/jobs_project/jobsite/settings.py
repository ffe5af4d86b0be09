"""Settings of the job tests' project; the test passes paths and ports in JOBS_* variables.

The Segment settings come from here, not from SEGMENT_* variables, so a worker that sends
to the receiver shows that it used the project's own settings.
"""

import os
from importlib.util import find_spec
from pathlib import Path

TMP = Path(os.environ["JOBS_TMP"])

SECRET_KEY = "jobs-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "jobsite.urls"
WSGI_APPLICATION = "jobsite.wsgi.application"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "segment_middleware.django",
    "jobsite",
]
MIDDLEWARE = ["segment_middleware.django.SegmentMiddleware"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(TMP / "db.sqlite3")}}
LOGGING_CONFIG = None

SEGMENT = {
    "WRITE_KEY": os.environ["JOBS_WRITE_KEY"],
    "HOST": os.environ["JOBS_SEGMENT_HOST"],
    "LOCAL_STORE": str(TMP / "spool.sqlite3"),
    "USER_ID": "jobsite.users.user_from_header",
    "ANONYMIZE_IP": True,
    # Only an exit's flush (or the RQ work horse's after each job) delivers within a test.
    "FLUSH_INTERVAL": 60,
    "SHUTDOWN_TIMEOUT": 5,
}

# Celery: kombu's filesystem transport, a broker that needs no server.
CELERY_BROKER_URL = "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "data_folder_in": str(TMP / "broker"),
    "data_folder_out": str(TMP / "broker"),
    "control_folder": str(TMP / "broker-control"),
    "store_processed": False,
    "polling_interval": 0.1,
}
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# RQ
REDIS_URL = os.environ.get("JOBS_REDIS_URL", "")

# Django's tasks framework: the django-tasks backport with django-tasks-db's backend, where
# installed (Django 6.0's django.tasks has no database backend of its own).
DJANGO_TASKS = bool(find_spec("django_tasks") and find_spec("django_tasks_db"))
if DJANGO_TASKS:
    INSTALLED_APPS += ["django_tasks", "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
