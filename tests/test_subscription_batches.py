"""Per-station subscriptions and Redis claims go out in batches (bridge.py, cluster.py)."""

import asyncio
from unittest import mock

from stations import bridge as bridge_mod
from stations import cluster as cluster_mod


def _bridge(loop):
    b = bridge_mod.Bridge(loop, "mqtt://127.0.0.1:1", node="t")
    b.client = mock.Mock()
    b.connected = True
    return b


async def test_one_subscribe_per_loop_turn_in_place_before_awaiters_resume():
    b = _bridge(asyncio.get_running_loop())
    waiters = [b.subscribe(f"cs/{i}/in/#") for i in range(450)]
    b.client.subscribe.assert_not_called()  # nothing until the turn ends
    await asyncio.gather(*waiters)
    calls = b.client.subscribe.call_args_list
    assert [len(c.args[0]) for c in calls] == [200, 200, 50]  # subscriptions.BATCH per packet
    assert calls[0].args[0][0] == ("cs/0/in/#", 1)
    assert calls[0].kwargs["properties"].SubscriptionIdentifier == [bridge_mod.ROUTED_SUB_ID]


async def test_reconnect_within_a_turn_ends_subscribed_and_leaving_unsubscribes():
    b = _bridge(asyncio.get_running_loop())
    await b.subscribe("a")
    b.client.reset_mock()
    b.unsubscribe("a")
    waiter = b.subscribe("a")  # the station came back in the same turn
    b.unsubscribe("b")  # never subscribed: nothing to send
    await waiter
    b.client.unsubscribe.assert_not_called()
    assert [c.args[0] for c in b.client.subscribe.call_args_list] == [[("a", 1)]]
    b.client.reset_mock()
    b.unsubscribe("a")
    await asyncio.sleep(0)
    b.client.unsubscribe.assert_called_once_with(["a"])
    b.client.subscribe.assert_not_called()


async def test_disconnected_subscribe_is_left_to_the_reconnect():
    b = _bridge(asyncio.get_running_loop())
    b.connected = False
    assert b.subscribe("a") is None
    assert "a" in b.subscriptions.filters


class _Pipe:
    def __init__(self, log, fail):
        self.log, self.fail, self.sent = log, fail, []

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    def publish(self, channel, body):
        self.sent.append(body)

    async def execute(self):
        await asyncio.sleep(0.01)
        if self.fail:
            raise ConnectionError("redis away")
        self.log.append(self.sent)


class _Redis:
    def __init__(self, fail=False):
        self.pipelines, self.fail = [], fail

    def pipeline(self, transaction):
        assert transaction is False
        return _Pipe(self.pipelines, self.fail)


async def test_claims_and_kicks_share_pipelines_in_order():
    c = cluster_mod.Cluster("redis://x", "n1", on_claim=None, on_kick=lambda *a: None)
    c._redis = _Redis()
    first = [asyncio.create_task(c.claim(f"cp{i}", "c", i)) for i in range(3)]
    await asyncio.sleep(0)  # the first pipeline is in flight: the rest queue behind it
    rest = [asyncio.create_task(c.claim("cp9", "c", 9)), asyncio.create_task(c.kick("cp9", "x"))]
    await asyncio.gather(*first, *rest)
    ops = [
        [(m.split(b'"op":"')[1][:4], m.split(b'"cid":"')[1][:3]) for m in p]
        for p in c._redis.pipelines
    ]
    assert ops == [
        [(b"clai", b"cp0"), (b"clai", b"cp1"), (b"clai", b"cp2")],
        [(b"clai", b"cp9"), (b"kick", b"cp9")],
    ]


async def test_redis_away_releases_the_waiters():
    c = cluster_mod.Cluster("redis://x", "n1", on_claim=None, on_kick=None)
    c._redis = _Redis(fail=True)
    c.healthy = True
    await asyncio.wait_for(asyncio.gather(*(c.claim(f"cp{i}", "c", i) for i in range(5))), 2)
    assert not c.healthy and not c._sending
