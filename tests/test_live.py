"""The portal's live WebSocket: staff browsers are told which stations changed, across processes."""

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from django.test import Client

from ocppgw.asgi import application
from stations import live
from tests.asgi_station import connect
from tests.conftest import unique_cid, until

pytestmark = pytest.mark.django_db(transaction=True)

REDIS = "redis://127.0.0.1:6379/0"


def test_one_event_per_flush_names_the_stations_or_says_many():
    assert live.event(["B", "A", "A"], False) == {
        "type": "live.changed",
        "cids": ["A", "B"],
        "presence": False,
    }
    many = live.event((f"CP{n}" for n in range(live.MAX_CIDS + 1)), True)
    assert many["cids"] is None and many["presence"] is True


async def _browser(user) -> WebsocketCommunicator:
    """A logged-in browser's socket on /portal/live/ (session cookie and same-site Origin)."""
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    return WebsocketCommunicator(
        application,
        "/portal/live/",
        headers=[(b"cookie", cookie), (b"origin", b"http://localhost"), (b"host", b"localhost")],
    )


@pytest.fixture
def staff(django_user_model):
    name = f"staff-{uuid.uuid4().hex[:8]}"
    return django_user_model.objects.create_user(name, password="x" * 20, is_staff=True)


@pytest.fixture
def redis_layer(settings):
    """Every process's layer on the real Redis, under a prefix of this test's own."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS], "prefix": prefix},
        }
    }
    channel_layers.backends.clear()
    yield prefix
    channel_layers.backends.clear()


async def test_non_staff_and_anonymous_browsers_are_refused(django_user_model):
    user = await database_sync_to_async(django_user_model.objects.create_user)(
        f"u-{uuid.uuid4().hex[:8]}", password="x" * 20
    )
    for who in (user, None):
        if who is None:
            socket = WebsocketCommunicator(application, "/portal/live/", headers=[(b"origin", b"http://localhost")])  # fmt: skip
        else:
            socket = await _browser(who)
        connected, _ = await socket.connect()
        assert not connected
        await socket.disconnect()


async def test_a_flush_in_another_process_reaches_the_browser_through_redis(staff, redis_layer):
    socket = await _browser(staff)
    connected, _ = await socket.connect()
    assert connected
    # the gateway process holding the station: its own layer instance, the same Redis
    other = RedisChannelLayer(hosts=[REDIS], prefix=redis_layer)
    feed = live.LiveFeed(asyncio.get_running_loop(), other)
    cid = unique_cid("LIVE")
    feed.flushed([(None, cid)], [("connected", 1, "c", "n", "1.6", None)])
    assert await socket.receive_json_from(timeout=5) == {"cids": [cid], "presence": True}
    await socket.disconnect()
    await other.flush()


async def test_at_most_one_event_a_second_with_the_flushes_between_merged():
    sent = []
    gate = asyncio.Event()

    class SlowLayer:
        async def group_send(self, group, message):
            sent.append(message)
            await gate.wait()

    loop = asyncio.get_running_loop()
    feed = live.LiveFeed(loop, SlowLayer())
    feed.EVERY_S = 0.2
    feed.flushed([(None, "A")], [])
    await until(lambda: sent, 2, "the first event at once")
    feed.flushed([(None, "B")], [])  # while the first send is still in flight
    feed.flushed([(None, "C")], [("disconnected",)])
    gate.set()
    started = loop.time()
    await until(lambda: len(sent) == 2, 2, "the merged second event")
    assert loop.time() - started >= 0.15  # not before its slot
    assert [m["cids"] for m in sent] == [["A"], ["B", "C"]]
    assert sent[1]["presence"] is True
    feed.flushed([(None, f"CP{n}") for n in range(live.MAX_CIDS + 1)], [])
    await until(lambda: len(sent) == 3, 2, "the third event")
    assert sent[2]["cids"] is None  # too many to name


async def test_a_station_connecting_to_the_gateway_is_pushed_to_the_browser(
    staff, gateway, station_factory
):
    socket = await _browser(staff)
    assert (await socket.connect())[0]
    station = await station_factory()
    cp = await connect(station.cid)
    pushed = await socket.receive_json_from(timeout=5)
    assert pushed["presence"] is True and station.cid in pushed["cids"]
    await cp.disconnect()
    await socket.disconnect()
