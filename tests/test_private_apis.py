"""Every private detail of Daphne, Twisted, autobahn, paho and asyncio the gateway relies on.

These are not public APIs: an upgrade may rename them silently. Each check names the module of
ours that depends on it, so an upgrade fails here, loudly, instead of in production.
"""

import asyncio
import functools
import inspect

import paho.mqtt.client as mqtt
import pytest
from daphne import server as daphne_server
from daphne import ws_protocol
from twisted.internet import abstract, tcp


def _source(obj) -> str:
    return inspect.getsource(obj)


def test_daphne_hands_each_consumer_a_partial_of_handle_reply_and_a_queue_get():
    # ocppgw/edge/socket.py: SocketWriter calls protocol.handle_reply directly; backlog() reads
    # the queue behind `receive`. ocppgw/edge/server.py copies this body for WebSockets, with a
    # FrameQueue instead of the asyncio.Queue
    source = _source(daphne_server.Server.create_application)
    assert "partial(self.handle_reply, protocol)" in source
    assert "receive=input_queue.get" in source
    for fragment in ('scope.setdefault("asgi", {"version": "3.0"})', "asyncio.ensure_future("):
        assert fragment in source
    assert source.count("put_nowait") == 0  # the protocols fill the queue, not the server
    assert "self.application_queue.put_nowait" in _source(ws_protocol.WebSocketProtocol)
    queue = asyncio.Queue()
    assert queue.get.__self__ is queue
    assert (
        functools.partial(daphne_server.Server.handle_reply, None).func.__name__ == "handle_reply"
    )


@pytest.mark.parametrize(
    "name",
    [
        "connections",
        "create_application",
        "application_checker",
        "timeout_checker",
        "protocol_connected",
        "protocol_disconnected",
        "handle_reply",
    ],
)
def test_daphne_server_members_the_gateway_server_overrides_or_reads(name):
    # ocppgw/edge/server.py (GatewayServer)
    server = daphne_server.Server
    assert hasattr(server, name) or f"self.{name} = " in _source(server)


def test_daphne_application_checker_body_is_the_one_we_copied():
    # ocppgw/edge/server.py _check_application() copies the loop body of Daphne 4.2
    source = _source(daphne_server.Server.application_checker)
    for fragment in ("application_close_timeout", "handle_exception", "del self.connections"):
        assert fragment in source


@pytest.mark.parametrize(
    "name",
    [
        "applicationCreateWorked",
        "handle_reply",
        "serverClose",
        "sendData",
        "onMessage",
        "check_timeouts",
        "sendClose",
        "sendCloseFrame",
        "_closeConnection",
        "STATE_OPEN",
    ],
)
def test_websocket_protocol_members_the_backpressure_protocol_overrides_or_calls(name):
    # ocppgw/edge/wsprotocol.py (BackpressureWebSocketProtocol)
    assert hasattr(ws_protocol.WebSocketProtocol, name)


def test_websocket_protocol_instance_state_we_read():
    # ocppgw/edge/server.py reads last_ping and socket_opened; wsprotocol.py send_queue, is_open
    source = _source(ws_protocol.WebSocketProtocol)
    assert "self.last_ping" in source and "self.socket_opened" in source
    from autobahn.websocket import protocol as autobahn

    autobahn_source = _source(autobahn.WebSocketProtocol)
    assert "self.send_queue" in autobahn_source
    assert "self.is_open" in autobahn_source and "self.is_closed" in autobahn_source
    # wsprotocol.py swaps the module's pformat while autobahn's _connectionMade runs
    assert autobahn.pformat is __import__("pprint").pformat
    assert "pformat(configAttrLog)" in _source(autobahn.WebSocketProtocol._connectionMade)
    assert ws_protocol.WebSocketFactory.protocol is not None


def test_twisted_tcp_server_write_buffer_state():
    # ocppgw/edge/wsprotocol.py _write_at_once() writes only when Twisted's buffer is empty
    for name in ("dataBuffer", "disconnecting", "_writeDisconnected", "connected"):
        assert hasattr(tcp.Server, name), name
    assert "_tempDataBuffer" in _source(abstract.FileDescriptor)
    assert "self.socket" in _source(tcp.Connection.__init__)


def test_daphne_builds_requests_from_its_module_and_finish_releases_them():
    # ocppgw/edge/wsprotocol.py install() replaces http_protocol.WebRequest (EdgeRequest); its
    # refusal relies on finish() taking the request out of the server, and on a channel that
    # is not persistent closing once the answer is written
    from daphne import http_protocol
    from twisted.web import http

    assert "protocol.requestFactory = WebRequest" in _source(
        http_protocol.HTTPFactory.buildProtocol
    )
    assert "protocol_disconnected(self)" in _source(http_protocol.WebRequest.finish)
    assert "ws_factory.buildProtocol" in _source(http_protocol.WebRequest.process)
    done = _source(http.HTTPChannel.requestDone)
    assert "if self.persistent:" in done and "self.loseConnection()" in done


def test_twisted_port_accepts_numberaccepts_per_read():
    # ocppgw/edge/server.py bounds the connections a listening port takes per loop turn
    assert "self.numberAccepts" in _source(tcp.Port.doRead)
    assert "self.numberAccepts = " in _source(tcp.Port.startListening)
    assert hasattr(daphne_server.Server, "listen_success")


def test_autobahn_tells_the_protocol_when_the_handshake_is_done():
    # ocppgw/edge/wsprotocol.py counts handshakes under way until onOpen (or the socket's loss)
    assert hasattr(ws_protocol.WebSocketProtocol, "onOpen")
    from autobahn.websocket import protocol as autobahn

    assert "self._onOpen()" in _source(autobahn.WebSocketServerProtocol.succeedHandshake)


def test_paho_internals_the_bridge_uses():
    # stations/bridge.py: drops the per-filter callback lookup, withdraws unsent messages
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    for name in ("_on_message_filtered", "_out_message_mutex", "_out_messages"):
        assert hasattr(client, name), name
    # bridge._NoFilters stands in for paho's filter tree through this one call
    assert "self._on_message_filtered.iter_match(" in _source(mqtt.Client)


def test_an_accepted_connection_knows_its_listening_port_and_the_port_its_state():
    # ocppgw/edge/wsprotocol.py _pause_accepting(): transport.server is the tcp.Port that
    # accepted the connection; its connected/disconnecting flags say whether it still listens
    assert "self.server = server" in _source(tcp.Server.__init__)
    assert {"connected", "disconnecting"} <= set(vars(abstract.FileDescriptor))
    assert "self.disconnecting = True" in _source(tcp.Port.loseConnection)
