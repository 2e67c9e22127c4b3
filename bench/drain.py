"""A backlog drain, the same for every consumer: the consumer's persistent session is made, the
backlog queued for it while it is offline, then it starts, and the rate is the backlog's points over
the time until InfluxDB holds every one (``count()``, so a lost point shows as ``lost``). CPU and
peak RSS come from /proc."""

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from bench.procstat import sample
from bench.publisher import publish
from devices.estate import Estate
from devices.topics import device_topic
from devices.types import Channel
from runtime.settings import MqttTarget
from store.influx import Influx
from store.registry.db import DeviceInfo

Message = tuple[str, bytes]
POLL_S = 0.2  # count() costs InfluxDB CPU: the same, sparse, poll for every consumer
DRAIN_TIMEOUT_S = 600.0


@dataclass
class Drain:
    name: str
    devices: int
    messages: int
    points: int
    seconds: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    stored: int = 0
    acknowledges: str = ""

    @property
    def msg_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def points_s(self) -> float:
        return self.points / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_msg(self) -> float:
        return 1e6 * self.cpu_s / self.messages if self.messages else 0.0

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.seconds if self.seconds else 0.0

    @property
    def lost(self) -> int:
        return self.points - self.stored


class Consumer(Protocol):
    def prepare(self) -> None:
        """Make the persistent session (and its subscriptions), then go offline."""

    def start(self) -> list[int]:
        """Running and connected; its process ids."""

    def stop(self) -> None: ...

    def forget(self) -> None:
        """End its persistent session at the broker."""


async def stored_points(influx: Influx) -> int:
    """Every reading has a seq: the sum of count(seq) over the database's measurements."""
    found = await influx.query("SELECT count(seq) FROM /.*/")
    return sum(int(s.values[0][1]) for s in found[0]) if found and found[0] else 0


async def measure(
    drain: Drain, consumer: Consumer, messages: Iterator[Message], target: MqttTarget, influx: Influx
) -> Drain:
    consumer.prepare()
    await publish(target, messages, drain.messages, client_prefix=f"bench-{drain.name}-pub")
    pids = consumer.start()
    before = [sample(p) for p in pids]
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < DRAIN_TIMEOUT_S:
            drain.stored = await stored_points(influx)
            if drain.stored >= drain.points:
                break
            await asyncio.sleep(POLL_S)
        drain.seconds = time.perf_counter() - started
        after = [sample(p) for p in pids]
    finally:
        consumer.stop()
        consumer.forget()
    drain.cpu_s = sum(a.cpu_s - b.cpu_s for a, b in zip(after, before, strict=True))
    drain.peak_rss_mb = max(a.peak_rss_mb for a in after)
    drain.stored = await stored_points(influx)  # nothing more arrives later: what is there is final
    return drain


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def smoke_reading(ts: int, seq: int) -> dict[str, object]:
    return {"ts": ts, "seq": seq, "state": "normal", "smoke_obscuration_pct": 0.2, "temp_c": 21.5,
            "battery_pct": 88.0, "rssi_dbm": -80.0}  # fmt: skip


def smoke(devices: list[DeviceInfo], start_ms: int, per_message: int = 1) -> Iterator[Message]:
    """Smoke-sensor telemetry round-robin over ``devices``; ``per_message`` > 1: arrays of readings."""
    topics = [device_topic(d.site, d.type, d.id, Channel.TELEMETRY) for d in devices]
    for n in itertools.count():
        device, seq = n % len(topics), 1 + (n // len(topics)) * per_message
        ts = start_ms + n * per_message
        if per_message == 1:
            yield topics[device], _json(smoke_reading(ts, seq))
        else:
            yield topics[device], _json([smoke_reading(ts + i, seq + i) for i in range(per_message)])


def estate(estate: Estate, start_ms: int) -> tuple[Callable[[], Iterator[Message]], int]:
    """Every device's own telemetry (the simulator's behaviours), round-robin over the whole estate:
    a factory of the messages, and how many devices."""
    from sim.behaviour import Fleet
    from sim.behaviours import behaviour_for

    devices = list(estate.devices)

    def messages() -> Iterator[Message]:
        fleet = Fleet.for_estate(7)
        behaviours = [behaviour_for(d, estate, 7, fleet) for d in devices]
        random.Random(7).shuffle(behaviours)
        seqs = [0] * len(behaviours)
        for n in itertools.count():
            i = n % len(behaviours)
            b = behaviours[i]
            for _, channel, obj in b.telemetry(start_ms + n):
                seqs[i] += 1
                obj["seq"] = seqs[i]
                yield device_topic(estate.site.id, b.device.type, b.device.id, channel), _json(obj)

    return messages, len(devices)
