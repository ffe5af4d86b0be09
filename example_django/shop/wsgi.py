"""WSGI entry point: ``gunicorn --chdir example_django shop.wsgi``."""

import os
import sys
from pathlib import Path

# Same fallback as manage.py: the repository root, last, for an uninstalled checkout.
_ROOT = str(Path(__file__).resolve().parent.parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from django.core.wsgi import get_wsgi_application  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

application = get_wsgi_application()
