"""Management commands: createstation, prunelogs and quickstart."""

import datetime
import io

import pytest
from django.contrib.auth.hashers import check_password
from django.core.management import CommandError, call_command

from stations.models import MessageLog, Station

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_createstation_stores_only_a_station_hash():
    out = run("createstation", "CP-New1", "--password", "given:password-0001")
    assert out.strip() == "station CP-New1: password given:password-0001"
    station = Station.objects.select_related("user").get(cid_key="cp-new1")
    assert (station.cid, station.user.username, station.security_profile) == ("CP-New1", "CP-New1", 1)  # fmt: skip
    assert station.user.password.startswith("pbkdf2_sha256_station$")
    assert check_password("given:password-0001", station.user.password)


def test_createstation_generates_a_password_of_ocpp_length():
    out = run("createstation", "CP-Gen1", "--profile", "2")
    password = out.strip().rsplit(" ", 1)[-1]
    assert 16 <= len(password) <= 40
    station = Station.objects.select_related("user").get(cid="CP-Gen1")
    assert station.security_profile == 2
    assert check_password(password, station.user.password)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["CP:1", "--password", "p" * 20], "may use only"),
        (["CP 1", "--password", "p" * 20], "may use only"),
        (["A" * 49, "--password", "p" * 20], "longer than 48"),
        (["CP1", "--password", "p" * 15], "16 to 40"),
        (["CP1", "--password", "p" * 41], "16 to 40"),
    ],
)
def test_createstation_refuses_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        run("createstation", *args)
    assert not Station.objects.exists()


def test_createstation_refuses_an_existing_station_in_any_case_unless_updating():
    run("createstation", "CPdup", "--password", "first-password-0001")
    with pytest.raises(CommandError, match="exists"):
        run("createstation", "cpDUP", "--password", "second-password-001")
    run("createstation", "cpDUP", "--password", "second-password-001", "--update")
    station = Station.objects.select_related("user").get()
    assert station.cid == "CPdup"  # shown as created
    assert check_password("second-password-001", station.user.password)
    assert not check_password("first-password-0001", station.user.password)


def _log(days_ago: float, n: int = 1):
    created = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days_ago)
    MessageLog.objects.bulk_create(
        [
            MessageLog(created=created, cid="CP1", direction="in", outcome="published")
            for _ in range(n)
        ]
    )


def test_prunelogs_dry_run_counts_and_deletes_nothing():
    _log(10, 3)
    _log(1, 2)
    assert run("prunelogs", "--dry-run").strip() == (
        "would delete 3 message-log rows older than 7 days"
    )
    assert MessageLog.objects.count() == 5


def test_prunelogs_deletes_only_rows_older_than_the_retention():
    _log(10, 3)
    _log(6.9, 2)
    assert run("prunelogs").strip() == "deleted 3 message-log rows older than 7 days"
    assert MessageLog.objects.count() == 2
    assert run("prunelogs", "--days", "1").strip() == "deleted 2 message-log rows older than 1 days"  # fmt: skip
    assert not MessageLog.objects.exists()


def test_quickstart_try_it_line_runs_in_a_new_terminal(settings):
    """The printed simulator line must load settings without the Makefile's DEBUG=true."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    settings.DEBUG = True  # quickstart runs only under DEBUG (make run)
    out = run("quickstart", "--port", "33033")
    (line,) = [x for x in out.splitlines() if "try it:" in x]
    command = re.sub(r"^\s*try it:\s*", "", line).replace(".venv/bin/python", sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DJANGO_SECRET_KEY")}
    done = subprocess.run(
        f"{command} --help", shell=True, env=env, cwd=Path(__file__).resolve().parents[1],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-500:]
    assert "usage: manage.py simulate" in done.stdout
