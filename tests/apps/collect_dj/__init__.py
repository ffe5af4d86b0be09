"""A Django project mounting the collection routes (tests/test_collect_servers.py).

Settings, URLs and the WSGI/ASGI entry points in one package; no database: the user comes
from the ``X-Test-User`` header (``tests/apps/collect_apps.test_user``) through a small
middleware standing in for a session.
"""
