"""Past capacity a station is told to come back later (HTTP 503 + Retry-After before the upgrade,
docs/contract.md §1), counted in /metrics, through a real gateway process: never a hang, a reset
or a 403."""

import asyncio
import base64
import os
import re

import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import PASSWORD, basic
from tests.e2e.conftest import open_socket

pytestmark = pytest.mark.e2e


def refusals(gw, reason: str) -> float:
    """ocppgw_auth_refusals_total{reason=...} as /metrics says it (0 when absent)."""
    status, body = gw.http("/metrics")
    assert status == 200
    pattern = rf'^ocppgw_auth_refusals_total\{{reason="{reason}"\}} (\S+)$'
    found = re.search(pattern, body.decode(), re.M)
    return float(found.group(1)) if found else 0.0


async def refused_503(gw, cid: str):
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(gw, cid)
    return refused.value.response


async def raw_upgrade(gw, cid: str) -> bytes:
    """Everything the gateway sends for one upgrade request, until it closes (5 s at most)."""
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ocpp/{cid} HTTP/1.1\r\nHost: {gw.host}:{gw.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: ocpp1.6\r\nAuthorization: {basic(cid, PASSWORD)}\r\n\r\n"
        ).encode()
    )
    try:
        return await asyncio.wait_for(reader.read(), 5)  # b"" or more, then EOF: closed
    finally:
        writer.close()


async def test_station_past_max_stations_gets_503_with_retry_after_and_is_counted(
    gateway_factory, pool
):
    [gw] = gateway_factory({"OCPPGW_MAX_STATIONS": "2", "OCPPGW_RETRY_AFTER_S": "3"})
    first, second, third = pool.take(), pool.take(), pool.take()
    held = [await open_socket(gw, first), await open_socket(gw, second)]

    response = await refused_503(gw, third)
    assert response.status_code == 503
    assert 3 <= int(response.headers["Retry-After"]) <= 6  # 1-2x OCPPGW_RETRY_AFTER_S
    assert refusals(gw, "capacity") == 1
    assert refusals(gw, "other") == 0
    # answered by the edge before an application was built (admission.refuse_early)
    deadline = asyncio.get_running_loop().time() + 5
    while "refused before the upgrade (HTTP 503): 1 capacity" not in gw.log():
        assert asyncio.get_running_loop().time() < deadline, gw.log()[-2000:]
        await asyncio.sleep(0.1)

    # on the wire: a whole HTTP answer, then the gateway closes the socket (never a hang)
    answer = await raw_upgrade(gw, third)
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 503 "), head
    assert re.search(r"(?im)^retry-after: \d+\r?$", head), head
    assert re.search(r"(?im)^content-length: \d+\r?$", head), head  # whole, not chunked
    assert refusals(gw, "capacity") == 2

    # a station held here is never refused for capacity: its new connection replaces the old
    again = await open_socket(gw, second)
    await asyncio.wait_for(held[1].wait_closed(), 5)
    held[1] = again
    assert refusals(gw, "capacity") == 2

    # a station leaves: the next one is admitted
    await held[0].close()
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        try:
            held[0] = await open_socket(gw, third)
            break
        except InvalidStatus as exc:  # the gateway may not have seen the close yet
            assert exc.response.status_code == 503
            assert asyncio.get_running_loop().time() < deadline, "never admitted after a leave"
            await asyncio.sleep(0.1)
    assert held[0].subprotocol == "ocpp1.6"
    for ws in held:
        await ws.close()


async def test_handshakes_past_the_pending_bound_get_503_at_once(gateway_factory, pool):
    # one password check at a time, one handshake may wait for it: of 30 stations arriving
    # together (none verified yet), those past the bound are told to retry, not queued
    [gw] = gateway_factory({"OCPPGW_AUTH_CONCURRENCY": "1", "OCPPGW_MAX_PENDING_HANDSHAKES": "1"})
    cids = [pool.take() for _ in range(30)]
    results = await asyncio.gather(*(open_socket(gw, cid) for cid in cids), return_exceptions=True)
    opened = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, InvalidStatus) for r in refused), refused
    assert {r.response.status_code for r in refused} == {503}
    assert all(int(r.response.headers["Retry-After"]) >= 10 for r in refused)
    assert refused, "30 simultaneous uncached handshakes never passed a bound of 1"
    assert opened, "the handshakes within the bound must get in"
    assert refusals(gw, "auth_backlog") == len(refused)
    for ws in opened:
        await ws.close()
    # once the storm is over, a refused station gets in when it retries
    retried = await open_socket(gw, cids[results.index(refused[0])])
    await retried.close()
