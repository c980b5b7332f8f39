"""MQTT_URL -> a paho client's broker address, credentials and TLS: one reading for every client
(the gateway's bridge and the portal's short-lived publisher)."""

import ssl
from urllib.parse import unquote, urlsplit


def configure(client, url: str) -> tuple[str, int]:
    """Set `client`'s credentials and TLS (mqtts://, certificate verified) from `url`;
    returns the broker's (host, port)."""
    parts = urlsplit(url)
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
    if parts.scheme == "mqtts":
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    return parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883)
