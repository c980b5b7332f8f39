"""The validation policy, shared by the gateway and the portal."""

import pytest

from stations.policy import ValidationPolicy

BAD_RESET = {"type": "Sideways"}


@pytest.mark.parametrize(
    ("mode", "direction", "checked"),
    [
        ("all", "downstream", True),
        ("downstream", "downstream", True),
        ("upstream", "downstream", False),
        ("off", "downstream", False),
    ],
)
def test_mode_picks_the_directions_checked(mode, direction, checked):
    policy = ValidationPolicy(mode)
    violation = policy.check(direction, "1.6", "Reset", "call", BAD_RESET)
    assert (violation is not None) is checked


@pytest.mark.parametrize("exempt_direction", ["downstream", "both"])
def test_an_exemption_takes_an_action_out(exempt_direction):
    policy = ValidationPolicy("all", frozenset({("Reset", exempt_direction)}))
    assert policy.check("downstream", "1.6", "Reset", "call", BAD_RESET) is None
    assert not policy.applies("downstream", "Reset")
    assert policy.applies("downstream", "ChangeAvailability")


def test_an_upstream_exemption_leaves_downstream_checked():
    policy = ValidationPolicy("all", frozenset({("Reset", "upstream")}))
    assert policy.check("downstream", "1.6", "Reset", "call", BAD_RESET).rule == "enum"
