"""GatewayServer still cleans up finished applications the way Daphne's Server does."""

import asyncio

import pytest
from twisted.internet.task import Clock

from ocppgw.edge import server as gateway_server

CLOSE_TIMEOUT_S = 0.2


async def application(scope, receive, send):
    if scope["then"] == "raise":
        raise RuntimeError("boom")
    if scope["then"] == "ignore":  # never reads its disconnect
        await asyncio.sleep(3600)
    await receive()


class Protocol:
    def __init__(self):
        self.exceptions = []
        self.checks = 0

    def handle_exception(self, exception):
        self.exceptions.append(exception)

    def check_timeouts(self):
        self.checks += 1


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(gateway_server, "reactor", clock)
    return clock


@pytest.fixture
def server(clock):
    server = gateway_server.GatewayServer(
        application, endpoints=["tcp:0"], application_close_timeout=CLOSE_TIMEOUT_S
    )
    server.connections = {}  # made by run()
    return server


def connect(server, then: str) -> tuple[Protocol, asyncio.Queue]:
    protocol = Protocol()
    server.protocol_connected(protocol)
    return protocol, server.create_application(protocol, {"type": "websocket", "then": then})


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_crashed_application_is_reported_to_its_open_connection(server):
    protocol, _ = connect(server, "raise")
    await settle()
    server.application_checker()
    assert [str(e) for e in protocol.exceptions] == ["boom"]
    assert "application_instance" not in server.connections[protocol]
    server.protocol_disconnected(protocol)
    server.application_checker()
    assert protocol not in server.connections


async def test_a_closed_connection_is_forgotten_once_its_application_ends(server, clock):
    idle = [connect(server, "listen")[0] for _ in range(3)]
    protocol, queue = connect(server, "listen")
    server.protocol_disconnected(protocol)
    clock.advance(gateway_server.TICK_S)  # a closed connection's pending check is dropped
    assert [p.checks for p in idle] == [1, 1, 1]
    assert protocol.checks == 0
    queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await settle()
    server.application_checker()
    assert set(server.connections) == set(idle)
    assert not idle[0].exceptions


async def test_an_application_ignoring_its_disconnect_is_cancelled_then_forgotten(server):
    protocol, _ = connect(server, "ignore")
    await settle()
    server.protocol_disconnected(protocol)
    server.application_checker()
    instance = server.connections[protocol]["application_instance"]
    assert not instance.done()
    await asyncio.sleep(CLOSE_TIMEOUT_S + 0.05)
    server.application_checker()
    await settle()
    assert instance.cancelled()
    server.application_checker()
    assert protocol not in server.connections


class _Port:
    """A listening port as listen_success sees it: Twisted's batch size and its read."""

    def __init__(self):
        self.numberAccepts = 5000  # grown by a long storm
        self.reads = []

    def doRead(self):
        self.reads.append(self.numberAccepts)


def test_a_listening_port_takes_a_bounded_batch_of_connections_per_loop_turn(server):
    port = _Port()
    server.listen_success(port)
    port.doRead()
    assert port.reads == [gateway_server.ACCEPTS_PER_TURN]
    port.numberAccepts = 20  # a quiet port keeps Twisted's own smaller batch
    port.doRead()
    assert port.reads[-1] == 20


def test_a_graceful_shutdown_that_times_out_says_so():
    from ocppgw.edge import serve

    line = serve.failed_shutdown(TimeoutError(), 80)
    assert "not finished within 80 s" in line and "OCPPGW_DRAIN_S" in line
    assert serve.failed_shutdown(RuntimeError("broker gone"), 80) == (
        "graceful shutdown failed: RuntimeError('broker gone')"
    )
