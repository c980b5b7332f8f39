#!/usr/bin/env python
"""Django's command-line utility for ocppgw.

Bad settings and an unusable database end in one line on stderr and exit status 1, not a
traceback (`--traceback` still shows it); `--help` needs no settings at all.
"""

import os
import sys

# help never signs anything: a placeholder lets `--help` work with DEBUG off and no secret set
HELP_ONLY_SECRET_KEY = "help-only-placeholder-never-used-for-signing"


def asks_for_help(argv: list[str]) -> bool:
    args = argv[1:]
    return not args or args[0] == "help" or "-h" in args or "--help" in args


def database_url() -> str:
    from ocppgw.config import redact_url

    # read after settings were imported, so a DATABASE_URL from `.env` is in os.environ too
    url = os.environ.get("DATABASE_URL")
    return redact_url(url) if url else "(unset: SQLite db.sqlite3)"


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ocppgw.settings")
    if asks_for_help(argv):
        os.environ.setdefault("DJANGO_SECRET_KEY", HELP_ONLY_SECRET_KEY)
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import InterfaceError, OperationalError

    prog = os.path.basename(argv[0])
    try:
        execute_from_command_line(argv)
    except ImproperlyConfigured as exc:
        if "--traceback" in argv:
            raise
        sys.exit(f"{prog}: {one_line(exc)}")
    except (OperationalError, InterfaceError) as exc:
        if "--traceback" in argv:
            raise
        problem = one_line(exc)
        # an unmigrated database reads like a broken one: say what fixes it
        if "no such table" in problem or ("relation" in problem and "does not exist" in problem):
            problem += " (run manage.py migrate)"
        sys.exit(f"{prog}: cannot use the database DATABASE_URL={database_url()}: {problem}")


def one_line(exc: Exception) -> str:
    # drivers add hint lines ("Is the server running on that host...?"): the first one says it
    lines = str(exc).strip().splitlines() or [exc.__class__.__name__]
    return lines[0].strip()


if __name__ == "__main__":
    main(sys.argv)
