"""A small shop-like Django project whose views enqueue background jobs (tests/test_jobs.py).

As in a user's project, the Celery app is loaded with Django so ``shared_task`` binds to it.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
