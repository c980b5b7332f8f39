"""manage.py as a user runs it: bad settings or an unusable database end in one stderr line and
exit status 1, never a traceback; `--help` works with no settings at all.

Each case runs manage.py in a fresh interpreter with the environment scrubbed as in test_config.
"""

import os
import subprocess
import sys

import pytest

from tests.test_config import REPO, SCRUB


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    return line


@pytest.mark.parametrize(
    ("args", "shows"),
    [
        ([], "createstation"),  # no subcommand = help
        (["help"], "createstation"),  # our commands listed, not only Django's core ones
        (["--help"], "createstation"),
        (["help", "createstation"], "usage: manage.py createstation"),
        (["createstation", "--help"], "usage: manage.py createstation"),
        (["prunelogs", "--help"], "usage: manage.py prunelogs"),
        (["simulate", "--help"], "usage: manage.py simulate"),
        (["quickstart", "-h"], "usage: manage.py quickstart"),
        (["rungateway", "--help"], "usage: manage.py rungateway"),
        (["migrate", "--help"], "usage: manage.py migrate"),
    ],
)
def test_help_works_without_any_settings(args, shows):
    result = manage(*args)  # no DEBUG, no DJANGO_SECRET_KEY
    assert result.returncode == 0, result.stderr[-2000:]
    assert shows in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # the README's `createstation CP1` in a shell without DEBUG=true
        ({}, "bad settings: DJANGO_SECRET_KEY: required when DEBUG is false (set a long random value)"),
        ({"DEBUG": "true", "OCPPGW_PORT": "abc"}, "bad settings: OCPPGW_PORT: expected int, got 'abc'"),
        ({"DEBUG": "true", "OCPPGW_MQTT_QOS": "7"}, "bad settings: OCPPGW_MQTT_QOS: 7 is outside 0..2"),
        (
            {"DEBUG": "true", "DATABASE_URL": "bogus://x"},
            "bad settings: DATABASE_URL: unsupported database URL scheme in 'bogus://x'",
        ),
        (  # the password stays out of the message
            {"DEBUG": "true", "DATABASE_URL": "bogus://admin:hunter2@x/db"},
            "bad settings: DATABASE_URL: unsupported database URL scheme in 'bogus://admin:***@x/db'",
        ),
        (
            {"DEBUG": "true", "MQTT_URL": "mqtt://gw:hunter2@broker:port"},
            "bad settings: MQTT_URL: bad port in 'mqtt://gw:***@broker:port'",
        ),
        (
            {"DEBUG": "true", "OCPPGW_PORT": "abc", "OCPPGW_MQTT_QOS": "7"},
            "bad settings: OCPPGW_PORT: expected int, got 'abc'; OCPPGW_MQTT_QOS: 7 is outside 0..2",
        ),
    ],
)  # fmt: skip
def test_bad_settings_print_one_line_naming_the_key(env, message):
    line = assert_one_line_error(manage("createstation", "CP1", **env))
    assert line == f"manage.py: {message}"


def test_bad_settings_stop_help_too_with_the_same_line():
    """Help shows defaults taken from the settings: a bad one is named, not papered over."""
    line = assert_one_line_error(manage("prunelogs", "--help", OCPPGW_PORT="abc"))
    assert line == "manage.py: bad settings: OCPPGW_PORT: expected int, got 'abc'"


@pytest.mark.parametrize("command", [["createstation", "CP1"], ["migrate"], ["prunelogs"]])
def test_unreachable_database_is_one_line_naming_database_url_without_the_password(command):
    url = "postgres://postgres:hunter2@127.0.0.1:1/x"  # nothing listens on port 1
    line = assert_one_line_error(manage(*command, DEBUG="true", DATABASE_URL=url))
    prefix = (
        "manage.py: cannot use the database DATABASE_URL=postgres://postgres:***@127.0.0.1:1/x: "
    )
    assert line.startswith(prefix), line
    assert "Connection refused" in line
    assert "hunter2" not in line


def test_unmigrated_database_says_to_migrate(tmp_path):
    url = f"sqlite:///{tmp_path}/db.sqlite3"
    line = assert_one_line_error(manage("createstation", "CP1", DEBUG="true", DATABASE_URL=url))
    assert line == (
        f"manage.py: cannot use the database DATABASE_URL={url}: "
        "no such table: stations_station (run manage.py migrate)"
    )


def test_traceback_flag_still_shows_the_traceback():
    result = manage("createstation", "CP1", "--traceback", DEBUG="true", OCPPGW_PORT="abc")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "OCPPGW_PORT: expected int" in result.stderr


@pytest.mark.parametrize("days", ["-3", "0"])
def test_prunelogs_refusal_is_one_line_and_exit_1(tmp_path, days):
    url = f"sqlite:///{tmp_path}/db.sqlite3"
    line = assert_one_line_error(manage("prunelogs", "--days", days, DEBUG="true", DATABASE_URL=url))  # fmt: skip
    assert line == f"CommandError: --days must be at least 1, got {days}"
