"""``python manage.py segment``."""
