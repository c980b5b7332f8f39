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


NOW = datetime.datetime(2026, 12, 6, 4, 0, 0, tzinfo=datetime.UTC)


@pytest.fixture
def frozen(monkeypatch):
    """prunelogs sees NOW, so its printed cutoff is known to the second."""
    from stations import retention

    monkeypatch.setattr(retention, "_now", lambda: NOW)


def _log(days_ago: float, n: int = 1):
    created = NOW - datetime.timedelta(days=days_ago)
    MessageLog.objects.bulk_create(
        [
            MessageLog(created=created, cid="CP1", direction="in", outcome="published")
            for _ in range(n)
        ]
    )


def test_prunelogs_dry_run_prints_count_and_cutoff_and_deletes_nothing(frozen):
    _log(10, 3)
    _log(1, 2)
    assert run("prunelogs", "--dry-run").splitlines() == [
        "would delete 3 message-log rows created before 2026-11-29T04:00:00Z "
        "(older than 7 days); dry run, nothing deleted"
    ]
    assert MessageLog.objects.count() == 5


def test_prunelogs_prints_what_goes_then_deletes_only_rows_older_than_the_retention(frozen):
    _log(10, 3)
    _log(6.9, 2)
    assert run("prunelogs").splitlines() == [
        "deleting 3 message-log rows created before 2026-11-29T04:00:00Z (older than 7 days)",
        "deleted 3 message-log rows",
    ]
    assert MessageLog.objects.count() == 2
    assert run("prunelogs", "--days", "1").splitlines() == [
        "deleting 2 message-log rows created before 2026-12-05T04:00:00Z (older than 1 days)",
        "deleted 2 message-log rows",
    ]
    assert not MessageLog.objects.exists()


@pytest.mark.parametrize("days", ["0", "-3"])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_prunelogs_refuses_days_below_one_and_keeps_every_row(frozen, days, dry_run):
    """--days -3 put the cutoff three days ahead: it deleted the whole log."""
    _log(10, 3)
    _log(0.1, 2)
    with pytest.raises(CommandError) as refused:
        run("prunelogs", "--days", days, *dry_run)
    assert str(refused.value) == f"--days must be at least 1, got {days}"
    assert MessageLog.objects.count() == 5


def test_quickstart_try_it_line_runs_in_a_new_terminal(settings, monkeypatch):
    """The printed simulator line must load settings without the Makefile's DEBUG=true, and
    take a generated password that starts with "-" (token_urlsafe's alphabet has it)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from stations.management.commands import quickstart

    monkeypatch.setattr(quickstart.secrets, "token_urlsafe", lambda n: "-Nfwa2iusQq3lXXY8-demo-pw")
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


def _printed(out: str, label: str) -> str:
    (line,) = [x for x in out.splitlines() if x.strip().startswith(label)]
    return line.split(label, 1)[1].strip()


def test_quickstart_mosquitto_lines_reach_the_configured_broker(settings):
    """The printed watch and send lines carry MQTT_URL's host and port, and work as printed."""
    import shlex
    import subprocess

    settings.DEBUG = True
    settings.MQTT_URL = "mqtt://localhost:1883"  # not the tools' default spelling, to tell
    out = run("quickstart", "--port", "33033")
    watch, send = _printed(out, "watch MQTT:"), _printed(out, "send a CALL:")
    assert watch.startswith("mosquitto_sub -h localhost -p 1883 ")
    assert send.startswith("mosquitto_pub -h localhost -p 1883 -t ocpp/cs/CP001/Reset ")
    # the watcher, limited to one message, sees what the send line publishes
    watch_args = [*shlex.split(watch), "-C", "1", "-W", "10"]
    watch_args[watch_args.index("ocpp/#")] = "ocpp/cs/CP001/Reset"
    with subprocess.Popen(watch_args, stdout=subprocess.PIPE, text=True) as watcher:
        # mosquitto_sub says nothing once subscribed: send until the watcher has one message
        while watcher.poll() is None:
            subprocess.run(shlex.split(send), check=True, timeout=10)
            try:
                watcher.wait(0.3)
            except subprocess.TimeoutExpired:
                pass
        seen = watcher.stdout.read()
    assert seen.startswith(
        'ocpp/cs/CP001/Reset {"MessageTypeId":2,"UniqueId":"r-1","Action":"Reset"'
    )


def test_createstation_never_takes_over_a_human_account(django_user_model):
    """A station's user is named after its cid: a person already called that keeps their account."""
    person = django_user_model.objects.create_user("Ops-Anna", password="people-password-1")
    with pytest.raises(CommandError, match="a user named 'ops-anna' already exists"):
        run("createstation", "ops-anna", "--password", "station-password-0001")
    person.refresh_from_db()
    assert person.check_password("people-password-1")
    assert not Station.objects.exists()
