"""Soak: 1,000 stations for 10 minutes at a realistic rate against a real `rungateway`.

Each station sends a Heartbeat every HEARTBEAT_S and a MeterValues-like vendor CALL every
METER_S; a backend on MQTT answers every CALL. The gateway's RSS and open file descriptors are
sampled every 10 s; the run fails (exit 1) if, after the first minute, RSS grows by more than
4 MB (2.5% past 160 MB) or the descriptors by more than 5.

    .venv/bin/python bench/soak.py [--stations 1000] [--minutes 10] [--mqtt-port 1883]
"""

import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DEBUG", "true")

from tests.reliability.clients import Station, close_all
from tests.reliability.conftest import Gateway, Recorder, manage

HEARTBEAT_S = 60
METER_S = 15


def respond(topic: str, payload: bytes):
    parts = topic.split("/")
    if len(parts) != 4 or not parts[2].startswith("soak"):
        return None
    body = json.loads(payload)
    if body.get("MessageTypeId") != 2:
        return None
    result = {"currentTime": "2025-01-01T00:00:00Z"} if parts[3] == "Heartbeat" else {}
    answer = {"MessageTypeId": 3, "UniqueId": body["UniqueId"], "Payload": result}
    return f"ocpp/cs/{parts[2]}/Reply/{parts[3]}", json.dumps(answer)


async def station_life(station: Station, stop_at: float, counts: dict) -> None:
    await asyncio.sleep(random.uniform(0, METER_S))  # spread the stations over the period
    k, next_beat = 0, time.monotonic() + random.uniform(0, HEARTBEAT_S)
    while time.monotonic() < stop_at:
        if time.monotonic() >= next_beat:
            frame, next_beat = [2, f"h{k}", "Heartbeat", {}], next_beat + HEARTBEAT_S
        else:
            frame = [2, f"m{k}", "VendorMeterValues", {"Wh": k * 10, "A": random.random()}]
        if not await station.send(frame):
            counts["closed"] += 1
            return
        counts["sent"] += 1
        k += 1
        await asyncio.sleep(METER_S)


async def main(args) -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 sockets on each side
    workdir = Path(tempfile.mkdtemp(prefix="ocppgw-soak-"))
    db = {"DATABASE_URL": f"sqlite:///{workdir}/soak.sqlite3"}
    manage(db, "migrate", "--noinput", "-v0")
    gw = Gateway(
        workdir,
        {
            **db,
            "MQTT_URL": f"mqtt://127.0.0.1:{args.mqtt_port}",
            "OCPPGW_AUTH": "none",
            "OCPPGW_LOG_LEVEL": "WARNING",
            # as in production: with DEBUG on, Django keeps the last 9,000 SQL queries per thread
            "DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
        },
    ).start()
    backend = Recorder(args.mqtt_port, ("ocpp/cp/+/+",), respond=respond)
    stations = [Station(gw.url(f"soak{i:05d}"), f"soak{i:05d}") for i in range(args.stations)]
    for i in range(0, len(stations), 100):
        await asyncio.gather(*(s.open() for s in stations[i : i + 100]))
    print(
        f"{len(stations)} stations connected; gateway pid {gw.proc.pid}, log {gw.log_path}",
        flush=True,
    )
    counts = {"sent": 0, "closed": 0}
    stop_at = time.monotonic() + args.minutes * 60
    lives = [asyncio.create_task(station_life(s, stop_at, counts)) for s in stations]
    samples = []
    started = time.monotonic()
    while time.monotonic() < stop_at:
        await asyncio.sleep(10)
        answered = sum(1 for s in stations for _, f in s.received if f and f[0] == 3)
        sample = (time.monotonic() - started, gw.rss() / 2**20, gw.fds(), counts["sent"], answered)
        samples.append(sample)
        at, rss, fds, sent, done = sample
        print(
            f"t={at:4.0f}s rss={rss:6.1f} MB fds={fds:5d} sent={sent:7d} answered={done:7d}",
            flush=True,
        )
    await asyncio.gather(*lives)
    await asyncio.sleep(3)
    answered = sum(1 for s in stations for _, f in s.received if f and f[0] == 3)
    errors = sum(1 for s in stations for _, f in s.received if f and f[0] == 4)
    await close_all(stations)
    backend.close()
    gw.stop()
    warm = [s for s in samples if s[0] >= 60] or samples
    rss_drift = warm[-1][1] - warm[0][1]
    fd_drift = warm[-1][2] - warm[0][2]
    print(
        json.dumps(
            {
                "stations": args.stations,
                "minutes": args.minutes,
                "frames_sent": counts["sent"],
                "answered": answered,
                "callerrors": errors,
                "closed_by_gateway": counts["closed"],
                "rss_mb_after_1min": round(warm[0][1], 1),
                "rss_mb_end": round(warm[-1][1], 1),
                "fds_after_1min": warm[0][2],
                "fds_end": warm[-1][2],
            }
        )
    )
    # 4 MB: the allocator's noise is ~0.1 MB; a leak of 100 bytes per frame grows 4 MB in 10 min
    flat = rss_drift <= max(4.0, 0.025 * warm[0][1]) and abs(fd_drift) <= 5
    ok = flat and counts["closed"] == 0 and answered >= 0.99 * counts["sent"]
    print("soak", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--mqtt-port", type=int, default=1883)
    sys.exit(asyncio.run(main(parser.parse_args())))
