"""Whether a message is admitted into the store, and if not, why: the one judgement that both MQTT
ingest and the API's HTTP ingest make, so a vendor is never told "accepted" for a reading ingest
would drop. Every refusal has one reason code (docs/ingest.md lists them).

The order: the topic, the device (registered, enabled), the payload (size, JSON, schema), then the
clock (not further ahead than the tolerance, not older than the retention policy keeps).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from devices.catalog import PayloadError, parse_payload
from devices.payloads.common import Reading, Status
from devices.topics import DeviceTopic, TopicError, parse_topic
from devices.types import DeviceType


class Registered(Protocol):
    """What admission needs of a registry entry (ingest's DeviceInfo, the API's DeviceRecord)."""

    @property
    def enabled(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    topic: DeviceTopic
    device: Registered
    items: list[Reading] | Status


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    detail: str
    topic: DeviceTopic | None = None  # None: the topic itself was refused
    registered: bool = False  # the device is in the registry (its rejects are charged to it)


Verdict = Admitted | Refused
Lookup = Callable[[str, DeviceType, str], Awaitable[Registered | None]]

# Every reason admission gives; ingest adds influx_refused (InfluxDB's answer) and internal_error.
REASONS = (
    "bad_topic", "bad_id", "unknown_type", "bad_channel", "unknown_device", "device_disabled", "too_large",
    "bad_json", "schema", "future", "too_old",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Admission:
    """The clock rules: ``future_tolerance_s`` ahead of ``now_ms``, ``max_age_ms`` behind (0: no limit)."""

    future_tolerance_s: int
    max_age_ms: int = 0

    async def judge(self, topic: str, payload: bytes, lookup: Lookup, now_ms: int) -> Verdict:
        try:
            t = parse_topic(topic)
        except TopicError as exc:
            return Refused(exc.reason, str(exc))
        device = await lookup(t.site, t.device_type, t.device_id)
        if device is None:
            return Refused("unknown_device", f"no {t.device_type} {t.device_id!r} at {t.site!r}", t)
        return self.judge_device(t, device, payload, now_ms)

    def judge_device(self, t: DeviceTopic, device: Registered, payload: bytes, now_ms: int) -> Verdict:
        """The rest, for a device already looked up."""
        if not device.enabled:
            return Refused("device_disabled", f"{t.device_id} is disabled", t, registered=True)
        try:
            parsed = parse_payload(t.device_type, t.channel, payload)
        except PayloadError as exc:
            return Refused(exc.reason, str(exc), t, registered=True)
        if isinstance(parsed, Status):
            return Admitted(t, device, parsed)
        newest = max(r.ts for r in parsed)
        if newest > now_ms + self.future_tolerance_s * 1000:
            detail = f"ts {newest} is ahead of the clock by more than {self.future_tolerance_s} s"
            return Refused("future", detail, t, registered=True)
        oldest = min(r.ts for r in parsed)
        if self.max_age_ms and oldest < now_ms - self.max_age_ms:
            return Refused("too_old", f"ts {oldest} is older than the retention policy", t, registered=True)
        return Admitted(t, device, parsed)
