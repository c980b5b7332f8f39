"""The edge: every detail of Daphne, Twisted and autobahn the gateway relies on lives here.

Nothing outside this package imports them (docs/architecture.md): `serve` runs one gateway
process on Daphne, `supervisor` runs N of them on shared sockets, `socket` is the fast send path
a consumer writes through, `server` and `wsprotocol` patch Daphne's server and WebSocket protocol.
tests/test_private_apis.py asserts that the private attributes used here still exist.
"""
