"""Whether a message is admitted into the store, and if not, why: the one judgement that both MQTT
ingest and the API's HTTP ingest make, so a vendor is never told "accepted" for a reading ingest
would drop. Every refusal has one reason code (docs/ingest.md lists them).

The order: the topic, the device (registered, enabled), the payload (size, JSON, schema), then the
clock (not further ahead than the tolerance, not older than the retention policy keeps).
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import Field

from devices.catalog import PayloadError, parse_payload
from devices.payloads.common import Reading, Status
from devices.topics import DeviceTopic, TopicError, parse_topic
from devices.types import DeviceType
from runtime.settings import Settings
from store.influx import Influx, InfluxError
from store.retention import policies

log = logging.getLogger("estatewatch.ingest.admission")


class AdmissionSettings(Settings):
    """What admission needs to know, the same for ingest and the API's HTTP ingest."""

    ingest_future_tolerance_s: int = Field(86_400, ge=0, description="readings further ahead than this are rejected")


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
        if len(parsed) == 1:  # the common case, without two generators
            newest = oldest = parsed[0].ts
        else:
            stamps = [r.ts for r in parsed]
            newest, oldest = max(stamps), min(stamps)
        if newest > now_ms + self.future_tolerance_s * 1000:
            detail = f"ts {newest} is ahead of the clock by more than {self.future_tolerance_s} s"
            return Refused("future", detail, t, registered=True)
        if self.max_age_ms and oldest < now_ms - self.max_age_ms:
            return Refused("too_old", f"ts {oldest} is older than the retention policy", t, registered=True)
        return Admitted(t, device, parsed)


async def current_admission(influx: Influx, settings: AdmissionSettings) -> Admission:
    """Admission with the database's default retention policy as the age limit (none when InfluxDB
    cannot say yet: then nothing is refused as too old)."""
    try:
        found = await policies(influx)
    except InfluxError as exc:
        log.warning("cannot read the retention policies yet (%s); not rejecting old readings", exc)
        found = {}
    age = next((p.duration_ms for p in found.values() if p.default), 0)
    return Admission(settings.ingest_future_tolerance_s, age)


class CurrentAdmission:
    """``current_admission``, read again at most every ``refresh_s`` (a retention policy can change)."""

    def __init__(self, influx: Influx, settings: AdmissionSettings, refresh_s: float = 300.0) -> None:
        self.influx = influx
        self.settings = settings
        self.refresh_s = refresh_s
        self._value: Admission | None = None
        self._at = 0.0

    async def get(self) -> Admission:
        import time

        if self._value is None or time.monotonic() - self._at > self.refresh_s:
            self._value, self._at = await current_admission(self.influx, self.settings), time.monotonic()
        return self._value
