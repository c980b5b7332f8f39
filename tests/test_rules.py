"""Topic rule precedence: station+action > station > action > setting (docs/contract.md §2)."""

import pytest

from stations.rules import Rule, RuleSet

DEFAULTS = {
    "upstream": "ocpp/cp/${cid}/${action}",
    "reply": "ocpp/cp/Reply/${cid}",
    "error": "ocpp/cp/Error/${cid}",
    "downstream": "ocpp/cs/${cid}/#",
    "notice": "ocpp/gw/Notice/${cid}",
}
RULES = [
    Rule("upstream", "BootNotification", "cp1", "station+action"),
    Rule("upstream", "", "cp1", "station"),
    Rule("upstream", "BootNotification", "", "action"),
    Rule("upstream", "", "", "every action"),  # an action-blank global rule overrides the setting
    Rule("reply", "", "cp2", "cp2 replies"),
    Rule("downstream", "", "cp3", "legacy/${cid}"),
]


@pytest.mark.parametrize(
    ("direction", "action", "station", "expected"),
    [
        ("upstream", "BootNotification", "cp1", "station+action"),
        ("upstream", "Heartbeat", "cp1", "station"),
        ("upstream", None, "cp1", "station"),
        ("upstream", "BootNotification", "cp2", "action"),
        ("upstream", "Heartbeat", "cp2", "every action"),
        ("reply", "Reset", "cp2", "cp2 replies"),
        ("reply", "Reset", "cp1", DEFAULTS["reply"]),
        ("error", "Reset", "cp1", DEFAULTS["error"]),
        ("downstream", None, "cp3", "legacy/${cid}"),
        ("downstream", None, "cp1", DEFAULTS["downstream"]),
        ("notice", "Reset", "cp1", DEFAULTS["notice"]),
    ],
)
def test_most_specific_rule_wins(direction, action, station, expected):
    assert RuleSet(DEFAULTS, RULES).template(direction, action, station) == expected


def test_without_rules_the_settings_apply():
    rules = RuleSet(DEFAULTS)
    assert not rules.has_station_rules
    for direction, template in DEFAULTS.items():
        assert rules.template(direction, "BootNotification", "cp1") == template


def test_station_rules_are_listed_for_downstream_matching():
    rules = RuleSet(DEFAULTS, RULES)
    assert rules.has_station_rules
    assert rules.station_templates("downstream") == ["legacy/${cid}"]
    assert rules.station_templates("error") == []


def test_version_changes_when_rules_change_and_not_otherwise():
    assert RuleSet(DEFAULTS, RULES).version == RuleSet(DEFAULTS, list(reversed(RULES))).version
    changed = [*RULES[:-1], Rule("downstream", "", "cp3", "other/${cid}")]
    assert RuleSet(DEFAULTS, RULES).version != RuleSet(DEFAULTS, changed).version
