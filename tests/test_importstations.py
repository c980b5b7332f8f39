"""`manage.py importstations`: a fleet provisioned from CSV or JSON, all or nothing."""

import csv
import io
import json

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def _import(tmp_path, text: str, *args, name="fleet.csv"):
    path = tmp_path / name
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    call_command("importstations", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_import_creates_every_station_and_shows_generated_passwords_once(tmp_path, db):
    from django.contrib.auth.hashers import check_password

    from stations.models import Station

    given = "a-given-password-0001"
    out, err = _import(
        tmp_path,
        f"cid,password,security_profile,validation_policy\nIMP-1,{given},2,lenient\nIMP-2,,1,\n",
    )
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["cid", "password"] and [r[0] for r in rows[1:]] == ["IMP-1", "IMP-2"]
    assert rows[1][1] == given and len(rows[2][1]) == 32
    one = Station.objects.select_related("user").get(cid_key="imp-1")
    assert (one.security_profile, one.validation_policy) == (2, "lenient")
    assert check_password(given, one.user.password)
    assert "imported 2 station(s): 2 new" in err


def test_import_is_all_or_nothing_and_names_every_bad_row(tmp_path, db, make_station):
    from stations.models import Station

    make_station("IMP-OLD")
    text = "cid,password,enabled\nIMP-A,,\nIMP-OLD,,\nbad/id,,\nIMP-B,short,\nIMP-C,,maybe\n"
    with pytest.raises(CommandError) as refused:
        _import(tmp_path, text)
    message = str(refused.value)
    assert "5 bad row(s)" not in message and "4 bad row(s)" in message
    for expected in (
        "row 3: station IMP-OLD exists",
        "row 4:",
        "row 5: OCPP requires",
        "row 6: enabled",
    ):
        assert expected in message
    assert not Station.objects.filter(cid_key="imp-a").exists()


def test_import_json_with_update_and_dry_run(tmp_path, db, make_station):
    from stations.models import Station

    make_station("IMP-J1")
    text = json.dumps([{"cid": "IMP-J1", "enabled": False}, {"cid": "IMP-J2"}])
    _, err = _import(tmp_path, text, "--update", "--dry-run", name="fleet.json")
    assert "2 rows are fine: 1 new, 1 to update" in err
    assert not Station.objects.filter(cid_key="imp-j2").exists()
    out, _ = _import(tmp_path, text, "--update", name="fleet.json")
    assert Station.objects.get(cid_key="imp-j1").enabled is False
    assert [r[0] for r in csv.reader(io.StringIO(out))][1:] == ["IMP-J2"]  # only new passwords
