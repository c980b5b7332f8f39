"""Backend CALLs for a station held nowhere: kept through the grace, then published again for its
new connection or answered `offline` (stations/inbox.py), on a manual clock."""

import json
from types import SimpleNamespace

import pytest

from stations import inbox as inbox_module
from stations.bridge import WATCH_SUB_ID
from stations.inbox import OFFLINE_GRACE_S, Inbox
from tests.clock import ManualClock


class FakeRegistry(dict):
    pass


class RecordingBridge:
    def __init__(self, v5=True):
        self.v5 = v5
        self.published: list[tuple[str, dict]] = []

    def publish(self, topic, payload, **kwargs):
        if payload:  # not the cleared retained status of a dead node
            self.published.append((topic, json.loads(payload)))


def reset(uid):
    body = {"MessageTypeId": 2, "UniqueId": uid, "Action": "Reset", "Payload": {"type": "Soft"}}
    return json.dumps(body).encode()


def presence(cid, status, node, connection="c"):
    body = {"cid": cid, "status": status, "node": node, "connection": connection}
    return json.dumps(body).encode()


@pytest.fixture
def fleet(monkeypatch):
    offline = []
    monkeypatch.setattr(
        inbox_module,
        "answer_offline",
        lambda gw, cid, cid_key, raw, props: offline.append(json.loads(raw)["UniqueId"]),
    )
    gw = SimpleNamespace(
        settings=SimpleNamespace(
            OCPPGW_DOWNSTREAM_TOPIC="ocpp/cs/${cid}/#",
            OCPPGW_PRESENCE_TOPIC="ocpp/presence/${cid}",
            OCPPGW_SHARE_GROUP="ocppgw",
        ),
        rules=SimpleNamespace(has_station_rules=False),
        registry=FakeRegistry(),
        bridge=RecordingBridge(),
        loop=ManualClock(),
        node="a",
        announce=lambda: None,
        publish_presence=lambda *a: None,
        db=SimpleNamespace(run=lambda *a: None),
    )
    gw.loop.create_task = lambda coro: None
    inbox = Inbox(gw)

    def call(cid, uid):
        inbox.on_message(f"ocpp/cs/{cid}/Reset", reset(uid), None, [WATCH_SUB_ID])

    def seen(cid, status, node, connection="c"):
        inbox.on_message(f"ocpp/presence/{cid}", presence(cid, status, node, connection), None,
                         [inbox_module.PRESENCE_SUB_ID])  # fmt: skip

    def node_status(node, status):
        body = json.dumps({"node": node, "status": status, "group": "ocppgw"}).encode()
        inbox.on_message(f"ocpp/gw/nodes/{node}", body, None, [inbox_module.NODES_SUB_ID])

    return SimpleNamespace(gw=gw, inbox=inbox, offline=offline, call=call, seen=seen,
                           node_status=node_status)  # fmt: skip


def redelivered(fleet):
    return [(t, b["UniqueId"], b["Redelivered"]) for t, b in fleet.gw.bridge.published
            if "Redelivered" in b]  # fmt: skip


def test_a_call_for_a_station_held_nowhere_is_answered_offline_after_the_grace(fleet):
    fleet.call("CP1", "r1")
    fleet.gw.loop.advance(OFFLINE_GRACE_S - 0.01)
    assert fleet.offline == []
    fleet.gw.loop.advance(0.02)
    assert fleet.offline == ["r1"] and fleet.inbox.kept_count == 0 and not fleet.inbox.kept


def test_a_station_that_connects_within_the_grace_gets_its_calls_again_in_order(fleet):
    fleet.call("CP1", "r1")
    fleet.call("CP1", "r2")
    fleet.gw.loop.advance(0.2)
    fleet.seen("CP1", "connected", "b")
    assert redelivered(fleet) == [("ocpp/cs/CP1/Reset", "r1", 1), ("ocpp/cs/CP1/Reset", "r2", 1)]
    fleet.gw.loop.advance(5)
    assert fleet.offline == [] and fleet.inbox.kept_count == 0


def test_a_call_for_a_station_connected_on_a_live_node_is_left_to_that_node(fleet):
    fleet.node_status("b", "online")
    fleet.seen("CP1", "connected", "b")
    fleet.call("CP1", "r1")
    fleet.gw.loop.advance(5)
    assert fleet.offline == [] and fleet.gw.bridge.published == [] and not fleet.inbox.kept


def test_presence_on_a_dead_node_counts_as_nowhere(fleet):
    fleet.node_status("b", "online")
    fleet.seen("CP1", "connected", "b", "old")
    fleet.seen("CP2", "connected", "b", "old")
    fleet.node_status("b", "offline")  # its retained "connected" lingers a while
    fleet.call("CP1", "r1")
    fleet.call("CP2", "r2")
    fleet.seen("CP1", "connected", "c", "new")  # CP1 came back on node c within the grace
    fleet.gw.loop.advance(OFFLINE_GRACE_S + 0.1)
    assert redelivered(fleet) == [("ocpp/cs/CP1/Reset", "r1", 1)]
    assert fleet.offline == ["r2"]
    fleet.node_status("b", "online")  # restarted under the same name: alive again
    fleet.seen("CP3", "connected", "b")
    fleet.call("CP3", "r3")
    fleet.gw.loop.advance(5)
    assert fleet.offline == ["r2"]


def held_here(fleet, cid_key, **attrs):
    """A conversation in this process's registry; what it was handed: (UniqueId, Redelivered)."""
    handed = []

    def on_downstream(raw, props):
        body = json.loads(raw)
        handed.append((body["UniqueId"], body.get("Redelivered")))

    fleet.gw.registry[cid_key] = SimpleNamespace(on_downstream=on_downstream, **attrs)
    return handed


def test_a_call_seen_by_the_watcher_that_holds_the_station(fleet):
    # MQTT 5: its routed copy took it, unless the connection is so young that its subscription
    # may have come after the publish: then its conversation gets it marked (it dedups)
    fleet.gw.loop.advance(10)
    got_it = SimpleNamespace(saw=lambda uid: uid == "r3")
    held_here(fleet, "cp1", started=0.0, backend_calls=got_it)
    cp2 = held_here(fleet, "cp2", started=9.9, backend_calls=got_it)
    held_here(fleet, "cp3", started=9.9, backend_calls=got_it)
    fleet.call("CP1", "r1")
    fleet.call("CP2", "r2")
    fleet.call("CP3", "r3")  # young, but its routed copy came: it answers for it
    del fleet.gw.registry["cp3"]  # even if it left during the grace
    fleet.gw.loop.advance(OFFLINE_GRACE_S + 0.1)
    assert cp2 == [("r2", 1)] and fleet.gw.bridge.published == [] and fleet.offline == []
    # a marked copy another process published (it saw the station's presence) on the watcher
    # subscription: the routed subscription took it too
    again = {**json.loads(reset("r4")), "Redelivered": 1}
    fleet.inbox.on_message("ocpp/cs/CP2/Reset", json.dumps(again).encode(), None, [WATCH_SUB_ID])
    fleet.gw.loop.advance(OFFLINE_GRACE_S + 0.1)
    assert cp2 == [("r2", 1)] and fleet.gw.bridge.published == []


def test_a_station_held_here_when_the_grace_ends_gets_the_call_from_here(fleet):
    # registered, its presence not back yet and its SUBSCRIBE maybe still queued: a copy
    # published now could reach the broker before it, go only to the `$share` group, and this
    # process (its watcher) would skip it as a marked copy of a station held here: silence
    fleet.call("CP1", "r1")
    handed = held_here(fleet, "cp1")
    fleet.gw.loop.advance(OFFLINE_GRACE_S + 0.1)
    assert handed == [("r1", 1)] and fleet.gw.bridge.published == [] and fleet.offline == []


def test_a_station_seen_connecting_here_gets_its_calls_from_here_in_order(fleet):
    fleet.call("CP1", "r1")
    fleet.call("CP1", "r2")
    handed = held_here(fleet, "cp1")
    fleet.seen("CP1", "connected", "a")  # its own presence, back from the broker
    assert handed == [("r1", 1), ("r2", 1)] and fleet.gw.bridge.published == []
    fleet.gw.loop.advance(5)
    assert fleet.offline == [] and fleet.inbox.kept_count == 0


def test_memory_is_bounded(fleet, monkeypatch):
    monkeypatch.setattr(inbox_module, "MAX_KEPT", 2)
    for uid in ("r1", "r2", "r3"):
        fleet.call("CP1", uid)
    assert fleet.offline == ["r3"] and fleet.inbox.kept_count == 2  # decided on arrival
    fleet.gw.loop.advance(1)
    assert fleet.offline == ["r3", "r1", "r2"]


def test_mqtt_311_republishes_without_properties(fleet):
    fleet.gw.bridge.v5 = False
    fleet.inbox.on_message("ocpp/cs/CP1/Reset", reset("r1"), None, None)  # the answerer
    fleet.seen("CP1", "connected", "b")
    assert redelivered(fleet) == [("ocpp/cs/CP1/Reset", "r1", 1)]


def test_a_late_disconnect_of_another_connection_leaves_the_station_connected(fleet):
    fleet.node_status("b", "online")
    fleet.seen("CP1", "connected", "b", "new")
    fleet.seen("CP1", "disconnected", "c", "old")  # a stalled older connection, finished late
    fleet.call("CP1", "r1")
    fleet.gw.loop.advance(5)
    assert fleet.offline == [] and not fleet.inbox.kept
    fleet.seen("CP1", "disconnected", "b", "new")
    fleet.call("CP1", "r2")
    fleet.gw.loop.advance(5)
    assert fleet.offline == ["r2"]
