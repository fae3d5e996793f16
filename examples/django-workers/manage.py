#!/usr/bin/env python
"""Django's command-line utility for the Django workers example."""
import os
import sys


def main():
    # The tests run on the in-memory channel layer and a local cache (no Redis).
    default = "project.test_settings" if sys.argv[1:2] == ["test"] else "project.settings"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", default)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
