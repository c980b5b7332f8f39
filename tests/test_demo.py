"""The demo backend's answers: schema-valid for every station CALL of every version."""

import pytest

from stations import demo, validation


@pytest.mark.parametrize("version", validation.VERSIONS)
def test_every_station_call_gets_an_answer_its_schema_accepts(version):
    actions = validation.actions(version, "cp")
    assert "BootNotification" in actions
    for action in actions:
        payload = demo.answer(version, action, at="2026-12-06T10:00:00Z")
        assert validation.check(version, action, "result", payload) is None, (action, payload)


@pytest.mark.parametrize("version", validation.VERSIONS)
def test_boot_is_accepted_now_with_a_real_heartbeat_interval(version):
    boot = demo.answer(version, "BootNotification", at="2026-12-06T10:00:00Z")
    assert boot == {"currentTime": "2026-12-06T10:00:00Z", "interval": 300, "status": "Accepted"}


def test_a_vendor_action_is_not_answered():
    assert demo.answer("1.6", "AcmeFrobnicate") is None


@pytest.mark.parametrize(
    ("template", "cid", "topic"),
    [
        ("ocpp/cs/${cid}/#", "CP001", "ocpp/cs/CP001/Reply/BootNotification"),
        ("ocpp/cs/${cid}", "CP001", "ocpp/cs/CP001"),  # EMQX 5 preset
        ("ocpp/cs/${cid}/#", "CP+1", "ocpp/cs/CP%2B1/Reply/BootNotification"),
    ],
)
def test_the_answer_goes_inside_the_station_downstream_filter(template, cid, topic):
    assert demo.reply_topic(template, cid, "BootNotification") == topic
