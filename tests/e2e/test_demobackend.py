"""The quick start's whole loop: a station, the gateway, the broker and `manage.py demobackend`."""

import asyncio
import subprocess
import sys

import pytest

from tests.e2e.conftest import REPO, _env, connected

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_demobackend_answers_a_boot_with_accepted(
    shared_gateway, pool, mqtt_probe, raw_station, version
):
    cid = pool.take()
    probe = mqtt_probe([f"ocpp/presence/{cid}"])
    station = await raw_station(shared_gateway, cid, version)
    await connected(probe, cid)  # retained: the demo backend learns the station's version
    backend = await asyncio.create_subprocess_exec(
        *[sys.executable, "manage.py", "demobackend", "--count", "1"],
        cwd=REPO,
        env=_env(shared_gateway.db_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = await asyncio.wait_for(backend.stdout.readline(), 30)
        assert b"demo backend: answering CALLs" in ready
        boot = (
            {"chargePointVendor": "V", "chargePointModel": "M"}
            if version == "1.6"
            else {"reason": "PowerUp", "chargingStation": {"vendorName": "V", "model": "M"}}
        )
        await station.send([2, "boot-1", "BootNotification", boot])
        answer = await station.next()
        assert answer[:2] == [3, "boot-1"]
        assert answer[2]["status"] == "Accepted" and answer[2]["interval"] == 300
        assert await asyncio.wait_for(backend.wait(), 10) == 0
        logged = (await backend.stdout.read()).decode()
        assert f"{cid} BootNotification [boot-1] -> ocpp/cs/{cid}/Reply/BootNotification" in logged
    finally:
        if backend.returncode is None:
            backend.kill()
            await backend.wait()
