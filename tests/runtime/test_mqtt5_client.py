"""The consuming client against a real Mosquitto: acknowledgement when the application says, many at
once; what is not acknowledged comes back; an earlier connection's acknowledgements are not sent;
the Receive Maximum bounds what this process holds even where Mosquitto 2.0.11 oversends; its own
QoS 1 publishes survive a broker restart."""

import asyncio
import uuid
from collections.abc import Callable

import pytest

from runtime.mqtt5.client import BrokerRefusedError, MqttClient
from runtime.mqtt5.packets import Publish
from runtime.settings import parse_mqtt_url
from tests.support.ingest import eventually
from tests.support.mqtt import subscribe
from tests.support.servers import Broker

TOPIC = "estate/v1/_test/mqtt5"


async def until(predicate: Callable[[], object], *, what: str, within_s: float = 10.0) -> None:
    ok = await eventually(lambda: bool(predicate()), within_s, 0.005)
    assert ok, f"waited {within_s} s for {what}"


class Taken:
    """What a client was given: messages, their connection, and the unacknowledged at most."""

    def __init__(self) -> None:
        self.messages: list[tuple[Publish, int]] = []
        self.unacked: set[tuple[int, int]] = set()
        self.peak_unacked = 0

    def __call__(self, messages: list[Publish], generation: int) -> None:
        for m in messages:
            self.messages.append((m, generation))
            self.unacked.add((generation, m.packet_id))
        self.peak_unacked = max(self.peak_unacked, len(self.unacked))

    def acked(self, generation: int, ids: list[int]) -> None:
        self.unacked -= {(generation, i) for i in ids}

    def payloads(self) -> list[bytes]:
        return [m.payload for m, _ in self.messages]


def client(
    broker: Broker, taken: Taken, client_id: str, receive_maximum: int = 100, subscriptions: tuple[str, ...] = (TOPIC,)
) -> MqttClient:
    return MqttClient(
        parse_mqtt_url(broker.url()), client_id=client_id, subscriptions=list(subscriptions), on_messages=taken,
        session_expiry_s=300, receive_maximum=receive_maximum, maximum_packet_size=300_000, keepalive=10,
    )  # fmt: skip


async def queue(broker: Broker, count: int, start: int = 0) -> None:
    """``count`` QoS 1 messages published (and acknowledged by the broker) through another client."""
    sink = Taken()
    async with client(broker, sink, f"pub-{uuid.uuid4().hex[:8]}", subscriptions=()) as pub:
        for n in range(start, start + count):
            await pub.publish(TOPIC, str(n).encode())
        await until(lambda: pub.publishes_in_flight == 0, what="the broker acknowledged every publish")


def ack_all(c: MqttClient, taken: Taken, keep: Callable[[Publish], bool] = lambda m: False) -> None:
    by_generation: dict[int, list[int]] = {}
    for m, g in taken.messages:
        if (g, m.packet_id) in taken.unacked and not keep(m):
            by_generation.setdefault(g, []).append(m.packet_id)
    for g, ids in by_generation.items():
        assert c.ack(g, ids)
        taken.acked(g, ids)


async def test_unacknowledged_messages_come_back_and_acknowledged_ones_do_not(broker: Broker) -> None:
    cid = f"c-{uuid.uuid4().hex[:8]}"
    async with client(broker, Taken(), cid):
        pass  # the session exists, offline
    await queue(broker, 50)
    first = Taken()
    async with client(broker, first, cid) as c:
        await until(lambda: len(first.messages) == 50, what="the backlog")
        ack_all(c, first, keep=lambda m: int(m.payload) % 5 == 0)  # one in five left unacknowledged
        generation = c.generation
    second = Taken()
    async with client(broker, second, cid) as c:
        await until(lambda: len(second.messages) >= 10, what="the unacknowledged again")
        assert sorted(int(p) for p in second.payloads()) == list(range(0, 50, 5))
        assert all(m.dup for m, _ in second.messages)
        # An acknowledgement for the earlier connection is not sent: its packet ids mean nothing now.
        assert not c.ack(generation, [m.packet_id for m, _ in second.messages])
        ack_all(c, second)
    third = Taken()
    async with client(broker, third, cid):
        await queue(broker, 1, start=99)
        await until(lambda: len(third.messages) == 1, what="a fresh message")
        assert third.payloads() == [b"99"]  # nothing acknowledged before came back


async def test_the_receive_maximum_bounds_what_is_held_even_when_mosquitto_oversends(broker: Broker) -> None:
    """After a reconnect with a backlog, Mosquitto 2.0.11 sends past the client's Receive Maximum once
    acknowledgements flow (65,000 unacknowledged at 20,000 measured); the client stops reading."""
    cid = f"c-{uuid.uuid4().hex[:8]}"
    async with client(broker, Taken(), cid, receive_maximum=200):
        pass
    await queue(broker, 3000)
    taken = Taken()
    async with client(broker, taken, cid, receive_maximum=200) as c:
        while len(taken.messages) < 3000:
            await until(lambda: taken.unacked, what="messages")
            await asyncio.sleep(0.005)  # acknowledgements in batches, as ingest's writer makes them
            ack_all(c, taken)
    assert sorted(int(p) for p in taken.payloads()) == list(range(3000))
    assert taken.peak_unacked == 200  # what came past it stayed unparsed bytes until there was room
    assert c.held_back_bytes > 0  # and something did come past it: Mosquitto 2.0.11 oversends


async def test_own_publishes_wait_out_a_broker_restart(broker: Broker) -> None:
    watcher, seen = subscribe(broker.port, TOPIC, client_id="watch", persistent=True)
    try:
        assert seen.subscribed.wait(10)
        taken = Taken()
        async with client(broker, taken, f"c-{uuid.uuid4().hex[:8]}", subscriptions=()) as c:
            broker.stop()  # a clean stop saves the watcher's session, so it gets what comes meanwhile
            await until(lambda: not c.connected, what="the client noticing")
            for n in range(20):
                await c.publish(TOPIC, f"while-down-{n}".encode())  # kept: the window is 16 + waiting
                if n == 10:
                    broker.start()
            await until(lambda: c.publishes_in_flight == 0, within_s=30, what="every publish acknowledged")
        assert seen.wait_for(lambda r: {f"while-down-{n}" for n in range(20)} <= {p.decode() for _, p, _ in r.messages})
    finally:
        watcher.disconnect()
        watcher.loop_stop()


async def test_refused_credentials_fail_at_once(broker: Broker) -> None:
    url = broker.url().replace("test-password", "wrong")
    c = MqttClient(
        parse_mqtt_url(url), client_id="refused", subscriptions=[TOPIC], on_messages=Taken(),
        session_expiry_s=0, receive_maximum=10, maximum_packet_size=10_000,
    )  # fmt: skip
    with pytest.raises(BrokerRefusedError, match=r"Bad User Name or Password|Not authorized"):
        await asyncio.wait_for(c.__aenter__(), 10)


async def test_a_refused_subscription_is_reported(broker: Broker) -> None:
    c = MqttClient(
        parse_mqtt_url(broker.url("simulator")), client_id="no-rights", subscriptions=[TOPIC], on_messages=Taken(),
        session_expiry_s=0, receive_maximum=10, maximum_packet_size=10_000,
    )  # fmt: skip
    async with c:
        await until(lambda: c.refused_filters == [TOPIC], what="the SUBACK's refusal")
