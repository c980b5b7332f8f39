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
