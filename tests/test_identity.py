"""Charge point identity (docs/contract.md §1): allowed characters, length, case, raw-path decoding."""

import pytest

from stations import identity


@pytest.mark.parametrize(
    "cid",
    [
        "CP001",
        "c",
        "A" * 48,
        "a-z_A-Z*0-9=+|@.",
        "cp.001@site|a=b+c*d",
        "0",
    ],
)
def test_identifier_string_characters_are_accepted(cid):
    assert identity.validate(cid) is None


@pytest.mark.parametrize(
    ("cid", "why"),
    [
        ("", "empty"),
        ("A" * 49, "longer than 48"),
        ("CP:1", "may use only"),  # ':' separates Basic-auth user and password
        ("CP/1", "may use only"),
        ("CP#1", "may use only"),
        ("CP%1", "may use only"),
        ("CP 1", "may use only"),
        (" CP1", "may use only"),
        ("CP1\n", "may use only"),
        ("CP\x001", "may use only"),
        ("CP\t1", "may use only"),
        ("CP?1", "may use only"),
        ("CP&1", "may use only"),
        ("CP~1", "may use only"),
        ("CPé", "may use only"),
        ("CP\uff11", "may use only"),  # fullwidth digit: \w would take it, the rule does not
    ],
)
def test_other_identities_are_refused(cid, why):
    problem = identity.validate(cid)
    assert problem is not None and why in problem


def test_identities_are_case_insensitive():
    assert identity.key("CP001") == identity.key("cp001") == identity.key("Cp001") == "cp001"


@pytest.mark.parametrize(
    ("raw_path", "cid"),
    [
        (b"/ocpp/CP001", "CP001"),
        (b"/ocpp/CP001?x=1", "CP001"),
        (b"/ocpp/CP%2D1", "CP-1"),  # percent-decoded once
        (b"/ocpp/CP%2B1", "CP+1"),
        (b"/ocpp/CP%252D1", "CP%2D1"),  # ... and only once: validate() refuses the '%'
        (b"/ocpp/a%2Fb", "a/b"),  # one segment: validate() refuses the '/'
        (b"/ocpp/a%20b", "a b"),
        (b"/ocpp/%FF", ""),  # not UTF-8 once decoded: refused as empty
        (b"/ocpp/\xc3\xa9", ""),  # raw non-ASCII bytes
        (b"/ocpp/", None),
        (b"/ocpp/?x=1", None),
        (b"/ocpp", None),
        (b"/ocpp/a/b", None),  # two segments
        (b"/ocpp/CP001/", "CP001"),  # one trailing slash (a base URL ending in /)
        (b"/ocpp//CP001", "CP001"),  # repeated slashes before the id
        (b"/ocpp///CP001/?x=1", "CP001"),
        (b"/ocpp/CP001//", None),  # one trailing slash only
        (b"/other/CP001", None),
        (b"", None),
    ],
)
def test_cid_is_one_raw_path_segment_decoded_once(raw_path, cid):
    assert identity.cid_from_raw_path(raw_path) == cid


@pytest.mark.parametrize(
    "raw_path", [b"/ocpp/a%2Fb", b"/ocpp/CP%252D1", b"/ocpp/a%20b", b"/ocpp/%FF", b"/ocpp/CP%3A1"]
)
def test_decoded_paths_with_forbidden_characters_are_refused(raw_path):
    assert identity.validate(identity.cid_from_raw_path(raw_path)) is not None


@pytest.mark.parametrize(
    ("raw_path", "rule"),
    [
        (b"/ocpp/", "'id present'"),
        (b"/ocpp/a/b", "'one segment'"),
        (b"/other/CP001", "'under /ocpp/'"),
        (b"/ocpp/%FF", "'percent-encoded UTF-8'"),
    ],
)
def test_a_refused_path_names_the_rule_that_refused_it(raw_path, rule):
    _, why = identity.parse_path(raw_path)
    assert f"rule {rule}" in why and raw_path.decode("ascii")[:6] in why
