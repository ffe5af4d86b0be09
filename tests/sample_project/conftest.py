"""The Django settings of the sample project (a project using pytest-django would keep
these in its settings module)."""

import django
from django.conf import settings


def pytest_configure() -> None:
    settings.configure(
        SECRET_KEY="sample-project-not-secret",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="sample_django",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "segment_middleware.django"],
        MIDDLEWARE=["segment_middleware.django.SegmentMiddleware"],
        DATABASES={},
    )
    django.setup()
