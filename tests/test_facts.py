"""Station facts read from Boot and Status notifications, both OCPP generations."""

import pytest
from channels.db import database_sync_to_async

from stations import facts
from stations.models import Station
from tests.conftest import new_station
from tests.test_msglog import writer


def test_boot_16_and_201():
    assert facts.boot(
        "1.6",
        {
            "chargePointVendor": "Acme",
            "chargePointModel": "X1",
            "chargeBoxSerialNumber": "SN-9",
            "firmwareVersion": "1.2.3",
        },
    ) == {"vendor": "Acme", "model": "X1", "serial_number": "SN-9", "firmware_version": "1.2.3"}
    boot = {
        "reason": "PowerUp",
        "chargingStation": {"vendorName": "Acme", "model": "Y2", "serialNumber": "S1"},
    }
    assert facts.boot("2.0.1", boot) == {
        "vendor": "Acme",
        "model": "Y2",
        "serial_number": "S1",
        "firmware_version": "",
    }


def test_connector_keys_and_states():
    status = {"connectorId": 2, "status": "Faulted", "errorCode": "GroundFailure"}
    assert facts.connector("1.6", status) == (
        "2",
        {"status": "Faulted", "error_code": "GroundFailure", "info": ""},
    )
    status = {"evseId": 1, "connectorId": 2, "connectorStatus": "Occupied", "timestamp": "t"}
    assert facts.connector("2.0.1", status) == ("1/2", {"status": "Occupied"})
    assert facts.connector("1.6", {"connectorId": "2"}) is None


def test_merge_keeps_order_and_bounds_the_row():
    merged = facts.merge({"10": {"status": "A"}, "2": {"status": "B"}}, {"1": {"status": "C"}})
    assert list(merged) == ["1", "2", "10"]
    full = {str(n): {} for n in range(facts.MAX_CONNECTORS)}
    assert "999" not in facts.merge(full, {"999": {}})
    assert facts.merge(full, {"1": {"status": "new"}})["1"] == {"status": "new"}


@pytest.mark.django_db(transaction=True)
async def test_the_writer_stores_facts_and_clears_the_node_when_offline():
    station = await database_sync_to_async(new_station)()
    w = writer()
    w.connected(station.id, "c1", "node-a", "1.6")
    w.facts(
        station.id,
        "1.6",
        "BootNotification",
        {"chargePointVendor": "Acme", "chargePointModel": "X1"},
    )
    w.facts(
        station.id,
        "1.6",
        "StatusNotification",
        {"connectorId": 1, "status": "Available", "errorCode": "NoError"},
    )
    w.facts(station.id, "1.6", "Heartbeat", {})
    await w.flush()
    w.facts(
        station.id,
        "1.6",
        "StatusNotification",
        {"connectorId": 2, "status": "Faulted", "errorCode": "OtherError"},
    )
    await w.flush()

    def read():
        return Station.objects.values(
            "vendor", "model", "last_boot_at", "last_heartbeat_at", "connectors", "node"
        ).get(id=station.id)

    row = await database_sync_to_async(read)()
    assert (row["vendor"], row["model"], row["node"]) == ("Acme", "X1", "node-a")
    assert row["last_boot_at"] and row["last_heartbeat_at"]
    assert {k: v["status"] for k, v in row["connectors"].items()} == {
        "1": "Available",
        "2": "Faulted",
    }
    assert row["connectors"]["2"]["error_code"] == "OtherError" and row["connectors"]["2"]["at"]
    w.disconnected(station.id, "c1")
    await w.flush()
    assert (await database_sync_to_async(read)())["node"] == ""


@pytest.mark.django_db(transaction=True)
async def test_heartbeat_times_are_written_with_the_counters():
    station = await database_sync_to_async(new_station)()
    w = writer()
    w.facts(station.id, "1.6", "Heartbeat", {})
    await w.flush(all_counters=False)  # the first periodic flush is due

    def heartbeat():
        return Station.objects.values_list("last_heartbeat_at", flat=True).get(id=station.id)

    first = await database_sync_to_async(heartbeat)()
    assert first is not None
    w.facts(station.id, "1.6", "Heartbeat", {})
    await w.flush(all_counters=False)  # counters not due yet: the Heartbeat waits for them
    assert await database_sync_to_async(heartbeat)() == first and w.heartbeats
    await w.flush()  # a full flush (as at stop) writes it
    assert await database_sync_to_async(heartbeat)() > first and not w.heartbeats
