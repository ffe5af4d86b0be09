"""Settings for the django-stubs mypy plugin (it sets Django up to read the models)."""

SECRET_KEY = "typed-sample"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "segment_middleware.django"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "segment_middleware.django.SegmentMiddleware",
]
ROOT_URLCONF = "django_urls"
SEGMENT = {"WRITE_KEY": None}
