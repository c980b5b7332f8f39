"""Topic templates: rendering, cid escaping, validation, and matching downstream topics."""

import pytest

from stations import topics

SEED = {
    "upstream": "ocpp/cp/${cid}/${action}",
    "reply": "ocpp/cp/Reply/${cid}",
    "error": "ocpp/cp/Error/${cid}",
    "downstream": "ocpp/cs/${cid}/#",
}
VALUES = {"cid": "CP001", "action": "BootNotification", "id": "42", "type": 2, "version": "1.6"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (SEED["upstream"], "ocpp/cp/CP001/BootNotification"),
        (SEED["reply"], "ocpp/cp/Reply/CP001"),
        (SEED["error"], "ocpp/cp/Error/CP001"),
        ("ocpp/cp/${cid}/Notify/${action}", "ocpp/cp/CP001/Notify/BootNotification"),
        ("ocpp/${clientid}", "ocpp/CP001"),  # the seed's alias for ${cid}
        ("v${version}/t${type}/${id}/${cid}", "v1.6/t2/42/CP001"),
        ("${cid}${cid}", "CP001CP001"),
        ("static/topic", "static/topic"),
    ],
)
def test_render_fills_every_placeholder(template, expected):
    assert topics.render(template, **VALUES) == expected


@pytest.mark.parametrize(
    ("cid", "escaped"),
    [
        ("CP+1", "CP%2B1"),
        ("CP*1", "CP%2A1"),
        ("+*+", "%2B%2A%2B"),
        ("a-b_c=d|e@f.g", "a-b_c=d|e@f.g"),  # the other allowed characters stay as they are
    ],
)
def test_cid_wildcard_characters_are_percent_encoded_in_topics(cid, escaped):
    assert topics.escape_cid(cid) == escaped
    assert (
        topics.render(SEED["upstream"], cid=cid, action="Heartbeat")
        == f"ocpp/cp/{escaped}/Heartbeat"
    )
    assert topics.unescape_cid(escaped) == cid


def test_cid_escaping_applies_wherever_the_cid_appears():
    assert topics.render("a/${cid}/${action}/${cid}", cid="A+B", action="Reset") == "a/A%2BB/Reset/A%2BB"  # fmt: skip


@pytest.mark.parametrize(
    ("template", "downstream", "problem"),
    [
        ("", False, "1 to 200"),
        ("a/" * 101, False, "1 to 200"),
        ("ocpp/${station}", False, "unknown placeholder ${station}"),
        ("ocpp/${cid}/${Action}", False, "unknown placeholder ${Action}"),
        ("ocpp/${}", False, "unknown placeholder"),
        ("ocpp/$cid", False, "lone '$'"),
        ("ocpp/${cid", False, "lone '$'"),
        ("ocpp/\x00/${cid}", False, "NUL"),
        ("ocpp/+/${cid}", False, "wildcards"),
        ("ocpp/#", False, "wildcards"),
        ("ocpp/cp/${cid}/+", False, "wildcards"),
        ("ocpp/cs/#", True, "must contain ${cid}"),
        ("ocpp/cs/+", True, "must contain ${cid}"),
        ("ocpp/cs/${cid}/${action}", True, "only ${cid} and ${version}"),
        ("ocpp/cs/${cid}/${id}", True, "only ${cid} and ${version}"),
        ("ocpp/#/${cid}", True, "'#' must be the last"),
        ("ocpp/${cid}/a#", True, "'#' must be the last"),
        ("ocpp/${cid}/a+", True, "'+' must stand alone"),
    ],
)
def test_validate_refuses(template, downstream, problem):
    found = topics.validate(template, downstream=downstream)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    ("template", "downstream"),
    [
        *[(t, False) for t in (SEED["upstream"], SEED["reply"], SEED["error"])],
        ("ocpp/cp/${clientid}/${version}/${type}/${id}", False),
        ("ocpp/gw/Notice/${cid}", False),
        (SEED["downstream"], True),
        ("ocpp/cs/${cid}", True),  # EMQX 5.x
        ("ocpp/cs/${clientid}/+/in", True),
        ("ocpp/${version}/${cid}/#", True),
    ],
)
def test_validate_accepts(template, downstream):
    assert topics.validate(template, downstream=downstream) is None


@pytest.mark.parametrize(
    ("template", "topic", "cid"),
    [
        (SEED["downstream"], "ocpp/cs/CP001/Reply/BootNotification", "CP001"),  # the seed's reply
        (SEED["downstream"], "ocpp/cs/CP001", "CP001"),  # EMQX 5's: '#' also matches the parent
        (SEED["downstream"], "ocpp/cs/CP001/Reset", "CP001"),
        (SEED["downstream"], "ocpp/cs/CP%2B1/x", "CP%2B1"),  # escaped: unescaped by the caller
        ("ocpp/cs/${cid}", "ocpp/cs/CP001", "CP001"),
        ("ocpp/cs/${cid}/+/in", "ocpp/cs/CP001/portal/in", "CP001"),
        ("ocpp/${version}/${cid}/#", "ocpp/1.6/CP001/x", "CP001"),
        ("a.b/${cid}/#", "a.b/CP001", "CP001"),  # regex characters in literals are literal
    ],
)
def test_matcher_captures_the_cid(template, topic, cid):
    match = topics.matcher(template).match(topic)
    assert match is not None and match.group("cid") == cid


@pytest.mark.parametrize(
    ("template", "topic"),
    [
        (SEED["downstream"], "ocpp/cs"),
        (SEED["downstream"], "ocpp/cs/"),
        (SEED["downstream"], "ocpp/csx/CP001"),
        (SEED["downstream"], "ocpp/cp/CP001/Reset"),
        (SEED["downstream"], "xocpp/cs/CP001"),
        ("ocpp/cs/${cid}", "ocpp/cs/CP001/Reset"),
        ("ocpp/cs/${cid}/+/in", "ocpp/cs/CP001/a/b/in"),
        ("a.b/${cid}/#", "aXb/CP001"),
    ],
)
def test_matcher_ignores_other_topics(template, topic):
    assert topics.matcher(template).match(topic) is None


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (SEED["downstream"], "ocpp/cs/+/#"),
        ("ocpp/cs/${cid}", "ocpp/cs/+"),
        ("ocpp/${version}/${clientid}/#", "ocpp/+/+/#"),
        ("ocpp/presence/${cid}", "ocpp/presence/+"),
    ],
)
def test_wildcard_filter_covers_every_station(template, expected):
    assert topics.wildcard_filter(template) == expected


def test_downstream_filter_is_the_concrete_subscription():
    assert topics.downstream_filter(SEED["downstream"], "CP*1", "1.6") == "ocpp/cs/CP%2A1/#"
    assert topics.downstream_filter("x/${version}/${cid}", "CP1", "2.0.1") == "x/2.0.1/CP1"
