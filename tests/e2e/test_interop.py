"""An independent client: the npm package ocpp-rpc in strict mode, through a real gateway.

tests/interop/ pins it (package.json + package-lock.json); `npm ci` installs it on first use.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PASSWORD
from tests.e2e.conftest import backend_topics

pytestmark = pytest.mark.e2e

INTEROP = Path(__file__).resolve().parents[1] / "interop"
NOW = "2025-01-01T00:00:00Z"
ANSWERS = {
    ("1.6", "BootNotification"): {"status": "Accepted", "currentTime": NOW, "interval": 300},
    ("2.0.1", "BootNotification"): {"status": "Accepted", "currentTime": NOW, "interval": 300},
    ("1.6", "Heartbeat"): {"currentTime": NOW},
    ("2.0.1", "Heartbeat"): {"currentTime": NOW},
    ("1.6", "StatusNotification"): {},
    ("2.0.1", "StatusNotification"): {},
}
RESETS = {"1.6": {"type": "Soft"}, "2.0.1": {"type": "OnIdle"}}


def installed_client() -> Path:
    """The ocpp-rpc install under tests/interop, running `npm ci` once; skips saying why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js/npm is not installed: the ocpp-rpc interop client cannot run")
    if not (INTEROP / "node_modules" / "ocpp-rpc" / "package.json").exists():
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=INTEROP,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.skip(f"`npm ci` could not install ocpp-rpc: {result.stderr.strip()[-800:]}")
    return Path(node)


def test_ocpp_rpc_strict_client_runs_16_and_201_sessions(shared_gateway, pool, mqtt_probe):
    node = installed_client()
    cids = {"1.6": pool.take(), "2.0.1": pool.take()}
    versions = {cid: version for version, cid in cids.items()}

    def respond(topic, body):
        """A backend: answers each CALL, and sends a Reset once the station reported its status."""
        parts = topic.split("/")
        if parts[:2] != ["ocpp", "cp"] or parts[2] not in versions or body["MessageTypeId"] != 2:
            return None
        cid, action = parts[2], body["Action"]
        version = versions[cid]
        if action == "StatusNotification":
            probe.publish(
                f"ocpp/cs/{cid}/Reset",
                {
                    "MessageTypeId": 2,
                    "UniqueId": f"reset-{cid}",
                    "Action": "Reset",
                    "Payload": RESETS[version],
                },
                wait=False,  # on paho's thread: it cannot wait for its own acknowledgement
            )
        answer = {
            "MessageTypeId": 3,
            "UniqueId": body["UniqueId"],
            "Payload": ANSWERS[version, action],
        }
        return f"ocpp/cs/{cid}/Reply/{action}", answer

    probe = mqtt_probe(backend_topics(cids["1.6"]) + backend_topics(cids["2.0.1"]), respond=respond)
    result = subprocess.run(
        [str(node), "session.js"],
        cwd=INTEROP,
        env={
            **os.environ,
            "ENDPOINT": f"ws://127.0.0.1:{shared_gateway.port}/ocpp",
            "PASSWORD": PASSWORD,
            "CID16": cids["1.6"],
            "CID201": cids["2.0.1"],
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip(), result.stderr
    reports = json.loads(result.stdout.strip().splitlines()[-1])
    for report in reports:
        assert report["failures"] == [], report
    assert result.returncode == 0, result.stderr
    by_protocol = {r["protocol"]: r for r in reports}
    for version, cid in cids.items():
        report = by_protocol[f"ocpp{version}"]
        assert report["negotiated"] == f"ocpp{version}"
        assert report["answers"]["BootNotification"]["status"] == "Accepted"
        assert report["reset"] == RESETS[version]
        # the station's answer to the Reset reached the backend as the seed's reply envelope
        reply = probe.wait_for(f"ocpp/cp/Reply/{cid}")
        assert reply == {
            "MessageTypeId": 3,
            "UniqueId": f"reset-{cid}",
            "Action": "Reset",
            "Payload": {"status": "Accepted"},
        }
