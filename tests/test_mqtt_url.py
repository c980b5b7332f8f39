"""MQTT_URL read once for every MQTT client of the project."""

import ssl

import paho.mqtt.client as mqtt
import pytest

from stations import mqtt_url


@pytest.mark.parametrize(
    ("url", "address", "user", "tls"),
    [
        ("mqtt://127.0.0.1", ("127.0.0.1", 1883), None, False),
        ("mqtt://broker:1884", ("broker", 1884), None, False),
        ("mqtts://broker", ("broker", 8883), None, True),
        ("mqtt://gw%40site:p%3Ass@broker:1883", ("broker", 1883), ("gw@site", "p:ss"), False),
    ],
)
def test_address_credentials_and_tls_come_from_the_url(url, address, user, tls):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    assert mqtt_url.configure(client, url) == address
    assert (client._username, client._password) == (
        (user[0].encode(), user[1].encode()) if user else (None, None)
    )
    assert (client._ssl_context is not None) is tls
    if tls:
        assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("url", "flags"),
    [
        ("mqtt://127.0.0.1", "-h 127.0.0.1 -p 1883"),
        ("mqtt://broker:1884", "-h broker -p 1884"),
        ("mqtts://gw%40site:secret@broker", "-h broker -p 8883 -u gw@site -P '<password>' --capath /etc/ssl/certs"),
    ],
)  # fmt: skip
def test_cli_flags_reach_the_url_broker_without_printing_its_password(url, flags):
    assert mqtt_url.cli_flags(url) == flags
