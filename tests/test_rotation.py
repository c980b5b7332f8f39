"""Password rotation through OCPP: the secret is found, its acceptance seen, and redacted."""

import pytest

from stations import rotation

SET_VARIABLES = {
    "setVariableData": [
        {
            "component": {"name": "OCPPCommCtrlr"},
            "variable": {"name": "HeartbeatInterval"},
            "attributeValue": "300",
        },
        {
            "component": {"name": "SecurityCtrlr"},
            "variable": {"name": "BasicAuthPassword"},
            "attributeValue": "new-password-0000000001",
        },
    ]
}


@pytest.mark.parametrize(
    ("version", "action", "payload", "secret"),
    [
        ("1.6", "ChangeConfiguration", {"key": "AuthorizationKey", "value": "s" * 20}, "s" * 20),
        ("1.6", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "60"}, None),
        ("1.6", "SetVariables", SET_VARIABLES, None),
        ("2.0.1", "SetVariables", SET_VARIABLES, "new-password-0000000001"),
        ("2.1", "SetVariables", SET_VARIABLES, "new-password-0000000001"),
        ("2.0.1", "SetVariables", {"setVariableData": [SET_VARIABLES["setVariableData"][0]]}, None),
        ("2.0.1", "ChangeConfiguration", {"key": "AuthorizationKey", "value": "x"}, None),
    ],
)
def test_secret_in_finds_only_the_password_variable(version, action, payload, secret):
    assert rotation.secret_in(version, action, payload) == secret


def test_accepted_reads_the_status_of_the_password_variable():
    ok = {
        "setVariableResult": [
            {
                "attributeStatus": "Accepted",
                "component": {"name": "SecurityCtrlr"},
                "variable": {"name": "BasicAuthPassword"},
            }
        ]
    }
    refused = {
        "setVariableResult": [
            {
                "attributeStatus": "Rejected",
                "component": {"name": "SecurityCtrlr"},
                "variable": {"name": "BasicAuthPassword"},
            }
        ]
    }
    assert rotation.accepted("2.0.1", ok)
    assert not rotation.accepted("2.0.1", refused)
    assert rotation.accepted("1.6", {"status": "Accepted"})
    assert not rotation.accepted("1.6", {"status": "Rejected"})


def test_redact_removes_the_secret_and_leaves_the_rest():
    clean = rotation.redact("2.0.1", "SetVariables", SET_VARIABLES)
    assert "new-password" not in str(clean)
    assert clean["setVariableData"][0]["attributeValue"] == "300"
    assert SET_VARIABLES["setVariableData"][1]["attributeValue"] == "new-password-0000000001"
    assert (
        rotation.redact("1.6", "ChangeConfiguration", {"key": "AuthorizationKey", "value": "x"})[
            "value"
        ]
        == rotation.REDACTED
    )
