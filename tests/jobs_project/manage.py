#!/usr/bin/env python
"""The job tests' Django project: ``python manage.py <command>`` with its settings."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
