"""MQTT_URL -> a paho client's broker address, credentials and TLS: one reading for every client
(the gateway's bridge and the portal's short-lived publisher)."""

import ssl
from urllib.parse import unquote, urlsplit


def address(url: str) -> tuple[str, int]:
    """The broker's (host, port) in `url`, with MQTT's default port for the scheme."""
    parts = urlsplit(url)
    return parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883)


def cli_flags(url: str) -> str:
    """mosquitto_sub/pub flags that reach the broker in `url` (the password left for the user)."""
    host, port = address(url)
    parts = urlsplit(url)
    flags = f"-h {host} -p {port}"
    if parts.username:
        flags += f" -u {unquote(parts.username)} -P '<password>'"
    if parts.scheme == "mqtts":
        flags += " --capath /etc/ssl/certs"
    return flags


def configure(client, url: str) -> tuple[str, int]:
    """Set `client`'s credentials and TLS (mqtts://, certificate verified) from `url`;
    returns the broker's (host, port)."""
    parts = urlsplit(url)
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
    if parts.scheme == "mqtts":
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    return address(url)
