"""What the gateway's configuration poll reads of credential and policy changes."""

import datetime

from stations import config_rows, services


def _since():
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)


def test_a_policy_change_is_taken_live_and_closes_nobody(make_station):
    station = make_station("CPCR1")
    since = _since()
    station.validation_policy = "lenient"
    station.save()
    [change], newest = config_rows.credential_changes(since)
    assert (change.cid_key, change.still_valid, change.validation_policy) == (
        "cpcr1",
        True,
        "lenient",
    )
    assert change.reason == "validation policy changed" and newest == change.at > since
    assert config_rows.credential_changes(newest)[0] == []  # seen once


def test_disabling_or_a_new_password_closes_the_live_connection(make_station):
    on, off = make_station("CPCR2"), make_station("CPCR3")
    since = _since()
    off.enabled = False
    off.save()
    services.set_password(on, "a-brand-new-password-42")
    changes = {c.cid_key: c for c in config_rows.credential_changes(since)[0]}
    assert (changes["cpcr3"].still_valid, changes["cpcr3"].reason) == (False, "station disabled")
    assert (changes["cpcr2"].still_valid, changes["cpcr2"].reason) == (False, "credentials changed")
