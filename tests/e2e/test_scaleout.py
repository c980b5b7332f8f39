"""`rungateway --processes 2`: one port, two gateway processes, Redis between them (docs/contract.md §4).

Each child adopts the supervisor's listening socket and holds its own stations, MQTT connection
and subscriptions. Frames never cross processes: every BootNotification is published once and
every backend Reset reaches its station once. When a child dies, the survivor marks its stations
disconnected from the dead node's Last Will (docs/contract.md §2).
"""

import asyncio
import json
import os
import signal
import socket

import psutil
import pytest
import websockets

from tests.conftest import MqttProbe, clear_retained, unique_cid, wait_until
from tests.e2e.gateway import SUBPROTOCOL, GatewayProcess, Topics, boot_frame, migrated_sqlite

pytestmark = pytest.mark.e2e
STATIONS = 20
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A supervisor with two children, both connected to the broker."""
    workdir = tmp_path_factory.mktemp("scaleout")
    gw = GatewayProcess(
        workdir,
        migrated_sqlite(workdir),
        Topics(),
        args=["--processes", "2"],
        env={"REDIS_URL": "redis://127.0.0.1:6379/0"},
    )
    gw.start()
    nodes = MqttProbe(["ocpp/gw/nodes/+"])
    try:
        wait_until(lambda: len(_online(gw, nodes)) == 2, 20, "two gateway processes online")
    finally:
        nodes.close()
    yield gw
    code = gw.stop(20)
    clear_retained([f"ocpp/gw/nodes/{HOST}:{pid}" for pid in _children(gw)])
    assert code == 0, gw.log()


def _children(gw) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(gw.proc.pid).children()]
    except psutil.NoSuchProcess:
        return []


def _online(gw, probe) -> set[str]:
    pids = _children(gw)
    return {
        body["node"]
        for _, body in probe.snapshot()
        if body.get("status") == "online" and body["node"] in {f"{HOST}:{pid}" for pid in pids}
    }


class Station:
    """A raw OCPP-J 1.6 client that answers every Reset with Accepted."""

    def __init__(self, cid):
        self.cid, self.resets, self.ws, self.task = cid, [], None, None

    async def connect(self, gw):
        self.ws = await websockets.connect(gw.url(self.cid), subprotocols=[SUBPROTOCOL])
        self.task = asyncio.create_task(self._serve())
        await self.ws.send(boot_frame(f"boot-{self.cid}"))
        return self

    async def _serve(self):
        try:
            async for text in self.ws:
                frame = json.loads(text)
                if frame[0] == 2 and frame[2] == "Reset":
                    self.resets.append(frame[1])
                    await self.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        except websockets.ConnectionClosed:
            pass

    async def close(self):
        await self.ws.close()
        if self.task:
            await asyncio.wait_for(self.task, 5)


async def _connect_all(gw, cids):
    return await asyncio.gather(*(Station(cid).connect(gw) for cid in cids))


def _presence(probe, topics, cid) -> dict | None:
    events = probe.snapshot(topics.presence(cid))
    return events[-1][1] if events else None


async def test_every_boot_is_published_once_and_every_reset_is_answered(cluster):
    topics = cluster.topics
    cids = [unique_cid("SO") for _ in range(STATIONS)]
    probe = MqttProbe([f"{topics.prefix}/#"])
    stations = []
    try:
        stations = await _connect_all(cluster, cids)
        boots = f"{topics.prefix}/cp/+/BootNotification"
        await asyncio.to_thread(
            wait_until,
            lambda: len(_on(probe, boots)) >= STATIONS,
            10,
            "every BootNotification on MQTT",
        )
        # both processes serve: the kernel hands connections to either
        nodes = {_presence(probe, topics, cid)["node"] for cid in cids}
        assert nodes <= {f"{HOST}:{pid}" for pid in _children(cluster)}

        for cid in cids:
            probe.publish(
                f"{topics.prefix}/cs/{cid}/Reset",
                {
                    "MessageTypeId": 2,
                    "UniqueId": f"r-{cid}",
                    "Action": "Reset",
                    "Payload": {"type": "Soft"},
                },
            )
        replies = f"{topics.prefix}/cp/Reply/+"
        await asyncio.to_thread(
            wait_until, lambda: len(_on(probe, replies)) >= STATIONS, 10, "every Reset answered"
        )
        await asyncio.sleep(0.5)  # anything duplicated would have arrived by now
        boot_ids = sorted(body["UniqueId"] for body in _on(probe, boots))
        assert boot_ids == sorted(f"boot-{cid}" for cid in cids)  # each exactly once
        answers = _on(probe, replies)
        assert sorted(b["UniqueId"] for b in answers) == sorted(f"r-{cid}" for cid in cids)
        assert all(b["Action"] == "Reset" for b in answers)
        assert [s.resets for s in stations] == [[f"r-{s.cid}"] for s in stations]
        errors = _on(probe, f"{topics.prefix}/cp/Error/+") + _on(
            probe, f"{topics.prefix}/gw/Notice/+"
        )
        assert errors == []
    finally:
        for station in stations:
            await station.close()
        probe.close()
        clear_retained([topics.presence(cid) for cid in cids])


async def test_a_second_connection_of_a_station_replaces_the_first_across_processes(cluster):
    topics = cluster.topics
    cids = [unique_cid("SD") for _ in range(6)]
    probe = MqttProbe([f"{topics.prefix}/presence/+"])
    first, second = [], []
    try:
        first = await _connect_all(cluster, cids)
        await asyncio.to_thread(
            wait_until,
            lambda: all(_presence(probe, topics, c) for c in cids),
            10,
            "first connections present",
        )
        second = await _connect_all(cluster, cids)
        for old in first:  # closed within a second or two, with 1000 "replaced"
            await asyncio.wait_for(old.task, 5)
            assert old.ws.close_code == 1000  # (Daphne drops the close reason)
        await asyncio.sleep(1)
        for cid in cids:
            event = _presence(probe, topics, cid)
            assert event["status"] == "connected", event
        assert all(s.ws.close_code is None for s in second)  # the newest stays
    finally:
        for station in first + second:
            await station.close()
        probe.close()
        clear_retained([topics.presence(cid) for cid in cids])


async def test_when_a_process_dies_the_survivor_marks_its_stations_disconnected(cluster):
    topics = cluster.topics
    cids = [unique_cid("SK") for _ in range(STATIONS)]
    probe = MqttProbe([f"{topics.prefix}/presence/+"])
    stations = []
    try:
        stations = await _connect_all(cluster, cids)
        await asyncio.to_thread(
            wait_until,
            lambda: all(_presence(probe, topics, c) for c in cids),
            10,
            "every station present",
        )
        held: dict[str, list[str]] = {}
        for cid in cids:
            held.setdefault(_presence(probe, topics, cid)["node"], []).append(cid)
        victim = max(held, key=lambda node: len(held[node]))
        os.kill(int(victim.rpartition(":")[2]), signal.SIGKILL)

        def marked():
            return all(
                _presence(probe, topics, cid)["status"] == "disconnected" for cid in held[victim]
            )

        await asyncio.to_thread(wait_until, marked, 10, f"stations of {victim} disconnected")
        for cid in held[victim]:
            event = _presence(probe, topics, cid)
            assert event["node"] != victim and victim in event["reason"], event
        for node, others in held.items():
            if node != victim:
                assert all(_presence(probe, topics, c)["status"] == "connected" for c in others)
    finally:
        for station in stations:
            await station.close()
        probe.close()
        clear_retained([topics.presence(cid) for cid in cids])


def _on(probe, pattern: str) -> list[dict]:
    prefix, _, suffix = pattern.partition("+")
    return [
        body
        for topic, body in probe.snapshot()
        if topic.startswith(prefix)
        and topic.endswith(suffix)
        and "/" not in topic[len(prefix) : len(topic) - len(suffix) or None]
    ]
