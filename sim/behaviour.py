"""A device's behaviour, the base of every type's (sim/behaviours.py): what it sends and when.

A behaviour never touches the network: ``telemetry(now)`` and ``events(now)`` return payload objects
(without ``seq``, which the runner stamps) and delays, so the same code drives the live simulator,
the load tests and the rules' replay fixtures. All randomness comes from the device's own seeded RNG.
"""

import random
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from devices.estate import Device, Estate
from devices.types import Channel, DeviceType
from sim import rhythm

Obj = dict[str, Any]
# (delay from now in ms, channel, payload object without seq)
Emission = tuple[int, Channel, Obj]
PROVINCE = "苏"
OFFICE = "C"
_PLATE_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


def make_plate(rng: random.Random, new_energy: bool = False) -> str:
    if new_energy:
        return PROVINCE + OFFICE + rng.choice("DF") + "".join(rng.choice("0123456789") for _ in range(5))
    return PROVINCE + OFFICE + "".join(rng.choice(_PLATE_CHARS) for _ in range(5))


@dataclass
class Fleet:
    """Residents' vehicles, shared by the gates so that every "out" follows an "in"."""

    rng: random.Random
    plates: list[str]
    inside: set[str] = field(default_factory=set)

    @classmethod
    def for_estate(cls, seed: int, size: int = 6000) -> "Fleet":
        rng = random.Random(seed)
        plates = sorted({make_plate(rng, new_energy=rng.random() < 0.2) for _ in range(size)})
        fleet = cls(rng, plates)
        fleet.inside = {p for p in plates if rng.random() < 0.6}
        return fleet


class Behaviour:
    device_type: DeviceType
    base_event_rate_s = 0.0  # events per second at rhythm 1.0

    def __init__(self, device: Device, estate: Estate, rng: random.Random, fleet: Fleet) -> None:
        self.device = device
        self.estate = estate
        self.rng = rng
        self.fleet = fleet
        self.tz: ZoneInfo = estate.site.tz
        self.silent = False
        # Plays another hour's rhythm (the load tests' evening peak at noon) with real timestamps.
        self.rhythm_shift_ms = 0

    def hour(self, now_ms: int) -> float:
        return rhythm.local_hour(now_ms + self.rhythm_shift_ms, self.tz)

    def event_rate(self, now_ms: int) -> float:
        return self.base_event_rate_s

    def telemetry(self, now_ms: int) -> list[Emission]:
        raise NotImplementedError

    def events(self, now_ms: int) -> list[Emission]:
        return []

    def jitter(self, value: float, spread: float) -> float:
        return value + self.rng.uniform(-spread, spread)


def as_telemetry(obj: Obj, delay_ms: int = 0, channel: Channel = Channel.TELEMETRY) -> Emission:
    return (delay_ms, channel, obj)


def as_event(obj: Obj, delay_ms: int = 0) -> Emission:
    return (delay_ms, Channel.EVENT, obj)
