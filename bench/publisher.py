"""A fast QoS 1 publisher for benchmarks: several connections, each with a window of unacknowledged
messages (below the broker's Receive Maximum), optionally paced to a rate."""

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from devices.catalog import MAX_PAYLOAD_BYTES
from devices.topics import device_topic
from devices.types import Channel
from runtime.mqtt5.client import MqttClient
from runtime.settings import MqttTarget
from store.registry.db import DeviceInfo

# A benchmark's connections come and go by the dozen: their connect lines are noise in its report.
QUIET = logging.getLogger("estatewatch.bench.publisher")
QUIET.setLevel(logging.WARNING)
# Below the broker's Receive Maximum (max_inflight_messages 100).
WINDOW = 90


@dataclass
class PublishResult:
    sent: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def smoke_messages(devices: list[DeviceInfo], start_ms: int, first_seq: int = 1) -> Iterator[tuple[str, bytes]]:
    """Smoke-sensor telemetry, round-robin over ``devices``: the estate's commonest message."""
    topics = [device_topic(d.site, d.type, d.id, Channel.TELEMETRY) for d in devices]
    for n in itertools.count():
        device = n % len(topics)
        seq = first_seq + n // len(topics)
        body = {
            "ts": start_ms + n,
            "seq": seq,
            "state": "normal",
            "smoke_obscuration_pct": 0.2,
            "temp_c": 21.5,
            "battery_pct": 88.0,
            "rssi_dbm": -80.0,
        }
        yield topics[device], json.dumps(body, separators=(",", ":")).encode()


class Publisher:
    """``async with Publisher(target, connections) as pub: await pub.publish(messages, count)``.

    The consumers' MQTT client (runtime/mqtt5): ~10x cheaper a publish than gmqtt, so the load
    generator leaves the cores to what is measured."""

    def __init__(self, target: MqttTarget, connections: int = 4, client_prefix: str = "bench-pub") -> None:
        self.target = target
        self.connections = connections
        self.client_prefix = client_prefix
        self._clients: list[MqttClient] = []
        self._stack = contextlib.AsyncExitStack()
        self._next = 0

    async def __aenter__(self) -> "Publisher":
        for i in range(self.connections):
            client = MqttClient(
                self.target, client_id=f"{self.client_prefix}-{i}", subscriptions=[], on_messages=lambda m, g: None,
                session_expiry_s=0, receive_maximum=10, maximum_packet_size=MAX_PAYLOAD_BYTES + 4096,
                publish_window=WINDOW, log=QUIET,
            )  # fmt: skip
            self._clients.append(await self._stack.enter_async_context(client))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients:
            await client.all_acknowledged()
        await self._stack.aclose()

    async def send(self, topic: str, payload: bytes) -> None:
        client = self._clients[self._next % len(self._clients)]
        self._next += 1
        await client.publish(topic, payload)

    async def publish(
        self, messages: Iterator[tuple[str, bytes]], count: int, rate: float | None = None
    ) -> PublishResult:
        """Publish ``count`` messages at QoS 1 (paced to ``rate`` per second) and wait for every PUBACK."""
        started = time.perf_counter()
        for n, (topic, payload) in enumerate(itertools.islice(messages, count)):
            await self.send(topic, payload)
            if rate is not None:
                ahead = started + (n + 1) / rate - time.perf_counter()
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
        for client in self._clients:
            await client.all_acknowledged()
        return PublishResult(count, time.perf_counter() - started)


async def publish(
    target: MqttTarget,
    messages: Iterator[tuple[str, bytes]],
    count: int,
    *,
    connections: int = 4,
    rate: float | None = None,
    client_prefix: str = "bench-pub",
) -> PublishResult:
    async with Publisher(target, connections, client_prefix) as pub:
        return await pub.publish(messages, count, rate)
