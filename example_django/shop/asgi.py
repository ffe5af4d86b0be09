"""ASGI entry point: ``uvicorn --app-dir example_django shop.asgi:application``."""

import os
import sys
from pathlib import Path

# Same fallback as manage.py: the repository root, last, for an uninstalled checkout.
_ROOT = str(Path(__file__).resolve().parent.parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from django.core.asgi import get_asgi_application  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

application = get_asgi_application()
