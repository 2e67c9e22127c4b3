"""Rejected messages: each counted once, its record made durable before it is acknowledged.

Every reject adds to ``ingest_reject_counts`` (one point per device and reason per flush, written
every ``ESTATEWATCH_INGEST_REJECT_COUNT_S``). Within the device's budget (``ingest/budget.py``) it is
also kept whole: an ``ingest_rejects`` point with the payload's first 4 KiB, and a dead-letter notice
on ``estate/v1/{site}/_rejects/{reason}``. Both measurements live in the ``rejects`` retention policy.
The notices and the noisy-device reports go through a bounded queue drained by one publisher:
nothing here publishes from a message's handler, and a full queue drops (and counts) notices.
"""

import asyncio
import base64
import collections
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from devices.notices import NoisyDevice, dead_letter_topic, noisy_topic
from devices.types import DeviceType
from ingest.budget import Noisy, RejectBudget
from ingest.metrics import IngestMetrics
from ingest.writer import Entry, Outcome
from store.series import line

log = logging.getLogger("estatewatch.ingest.rejects")
REJECTS_MEASUREMENT = "ingest_rejects"
COUNTS_MEASUREMENT = "ingest_reject_counts"
REJECTS_RP = "rejects"
# What a dead letter keeps of the original payload.
KEEP_PAYLOAD_BYTES = 4096
UNREGISTERED = "_unregistered"


class QuarantineError(RuntimeError):
    """A noisy device could not be taken off the broker."""


@dataclass(frozen=True, slots=True)
class Source:
    """Who a reject is charged to: a registered device, or its site's unregistered senders."""

    site: str
    device_type: DeviceType | None = None
    device_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.site}/{self.device_type}/{self.device_id}" if self.device_id else f"{self.site}/{UNREGISTERED}"

    def tags(self) -> dict[str, str | None]:
        known = bool(self.device_id and self.device_type)
        return {"site": self.site, "device_id": self.device_id if known else None,
                "device_type": self.device_type.value if known and self.device_type else None}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Letter:
    """What a dead letter keeps of a message: its topic, the payload's first KEEP_PAYLOAD_BYTES and
    its size. Made as soon as the message is judged, so its full bytes (up to 256 KiB) are not held
    while the reject's record is written."""

    topic: str
    head: bytes
    size: int

    @classmethod
    def of(cls, topic: str, payload: bytes) -> "Letter":
        return cls(topic, payload[:KEEP_PAYLOAD_BYTES], len(payload))

    def kept(self) -> dict[str, object]:
        # A cut inside a multi-byte character (up to 3 bytes of it) is no reason for base64.
        for cut in range(4 if self.size > len(self.head) else 1):
            try:
                return {"payload": self.head[: len(self.head) - cut].decode("utf-8")}
            except UnicodeDecodeError:
                continue
        return {"payload_base64": base64.b64encode(self.head).decode()}


def dead_letter(letter: Letter, reason: str, detail: str, received_ms: int) -> bytes:
    doc = {
        "topic": letter.topic[:512],
        "reason": reason,
        "detail": detail[:500],
        "received_ms": received_ms,
        "payload_bytes": letter.size,
        "truncated": letter.size > KEEP_PAYLOAD_BYTES,
        **letter.kept(),
    }
    return json.dumps(doc, ensure_ascii=False).encode()


class Stamps:
    """Unique nanosecond timestamps for one worker's own points (none overwrites another)."""

    def __init__(self) -> None:
        self._last = 0

    def next_ns(self) -> int:
        self._last = max(time.time_ns(), self._last + 1)
        return self._last


class Notices:
    """The broker side channel: bounded, never blocking a handler. Noisy-device reports (a few a
    minute) have their own lane, served first, so a flood of dead letters cannot crowd them out."""

    def __init__(self, capacity: int, metrics: IngestMetrics) -> None:
        self.capacity = capacity
        self.metrics = metrics
        self._urgent: collections.deque[tuple[str, bytes]] = collections.deque()
        self._letters: collections.deque[tuple[str, bytes]] = collections.deque()
        self._wake = asyncio.Event()

    def offer(self, topic: str, payload: bytes, *, urgent: bool = False) -> bool:
        lane = self._urgent if urgent else self._letters
        if len(lane) >= self.capacity:
            self.metrics.notices.labels("dropped").inc()
            return False
        lane.append((topic, payload))
        self._wake.set()
        return True

    def __len__(self) -> int:
        return len(self._urgent) + len(self._letters)

    async def publish_forever(self, send: Callable[[str, bytes], Awaitable[None]]) -> None:
        while True:
            if not self:
                self._wake.clear()
                await self._wake.wait()
                continue
            topic, payload = (self._urgent or self._letters).popleft()
            await send(topic, payload)
            self.metrics.notices.labels("sent").inc()


class RejectCounts:
    """Counted rejects, one point per (source, reason) per flush; each reject's future settles once
    the point that counts it is stored (or spooled)."""

    def __init__(self, worker: str, period_s: float, submit: Callable[[Entry], None], stamps: Stamps) -> None:
        self.worker = worker
        self.period_s = period_s
        self.submit = submit
        self.stamps = stamps
        self._pending: dict[tuple[Source, str], int] = {}
        self._waiters: list[asyncio.Future[Outcome]] = []

    def add(self, source: Source, reason: str) -> asyncio.Future[Outcome]:
        key = (source, reason)
        self._pending[key] = self._pending.get(key, 0) + 1
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def lines(self, pending: dict[tuple[Source, str], int]) -> list[str]:
        return [
            line(COUNTS_MEASUREMENT, {**source.tags(), "reason": reason, "worker": self.worker}, {"count": n},
                 self.stamps.next_ns())
            for (source, reason), n in pending.items()
        ]  # fmt: skip

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, waiters = self._pending, self._waiters
        self._pending, self._waiters = {}, []
        entry = Entry(self.lines(pending), rp=REJECTS_RP)
        self.submit(entry)
        outcome = await entry.done
        if outcome is Outcome.REFUSED:
            log.error("InfluxDB refused reject counts: %s", entry.refusal[:300])
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(outcome)

    async def flush_forever(self, sweep: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            sweep()
            await self.flush()


class RejectBook:
    """The one place a reject is counted, budgeted, recorded and announced."""

    def __init__(
        self,
        metrics: IngestMetrics,
        worker: str,
        budget: RejectBudget,
        counts: RejectCounts,
        notices: Notices,
        submit: Callable[[Entry], None],
        quarantine_per_min: int = 0,
    ) -> None:
        self.metrics = metrics
        self.worker = worker
        self.budget = budget
        self.counts = counts
        self.notices = notices
        self.submit = submit
        self.quarantine_per_min = quarantine_per_min
        self._sources: dict[str, Source] = {}
        self._quarantine: asyncio.Queue[Source] = asyncio.Queue()
        self._asked: set[str] = set()  # quarantine asked for (once per device and process)
        self.quarantined: set[str] = set()  # and done

    async def reject(self, letter: Letter, reason: str, detail: str, source: Source) -> Outcome:
        """Count it, record it (whole, within the budget), announce it; returns once durable."""
        self.metrics.rejects.labels(reason).inc()
        now_ms = int(time.time() * 1000)
        self._sources[source.key] = source
        charge = self.budget.charge(source.key, reason, now_ms)
        for noisy in (charge.finished, charge.crossed):
            if noisy is not None:
                self._report(noisy, now_ms)
        if (
            self.quarantine_per_min
            and source.device_id
            and charge.minute_count >= self.quarantine_per_min
            and source.key not in self._asked
        ):
            self._asked.add(source.key)
            self._quarantine.put_nowait(source)
        counted = self.counts.add(source, reason)
        if not charge.keep:
            self.metrics.rejects_counted_only.inc()
            return await counted
        entry = Entry([self.line(letter, reason, detail, source)], rp=REJECTS_RP)
        self.submit(entry)
        self.notices.offer(dead_letter_topic(letter.topic, reason), dead_letter(letter, reason, detail, now_ms))
        outcome = await entry.done
        await counted
        if outcome is Outcome.REFUSED:  # our own line: a bug, but the message must still be let go
            log.error("InfluxDB refused a dead letter: %s", entry.refusal[:300])
        return outcome

    def line(self, letter: Letter, reason: str, detail: str, source: Source) -> str:
        kept = letter.kept()
        text = kept.get("payload") or kept.get("payload_base64") or ""
        encoding = "utf-8" if "payload" in kept else "base64"
        fields: dict[str, object] = {"topic": letter.topic[:512], "detail": detail[:500], "payload_bytes": letter.size,
                                     "payload": str(text), "payload_encoding": encoding}  # fmt: skip
        tags = {**source.tags(), "reason": reason, "worker": self.worker}
        return line(REJECTS_MEASUREMENT, tags, fields, self.counts.stamps.next_ns())

    def sweep(self) -> None:
        """Final reports of minutes that are over (called every count flush)."""
        now_ms = int(time.time() * 1000)
        for noisy in self.budget.sweep(now_ms):
            self._report(noisy, now_ms)

    async def quarantine_forever(self, act: Callable[[Source], Awaitable[None]]) -> None:
        """Take noisy devices off the broker, one at a time, and say so in a noisy report."""
        while True:
            source = await self._quarantine.get()
            try:
                await act(source)
            except QuarantineError as exc:  # logged; the device stays noisy and its next flood asks again
                log.error("could not quarantine %s: %s", source.key, exc)
                self._asked.discard(source.key)
                continue
            self.quarantined.add(source.key)
            self.metrics.quarantined.inc()
            now_ms = int(time.time() * 1000)
            self._report(self.budget.current(source.key, now_ms), now_ms, quarantined=True)

    def _report(self, noisy: Noisy, now_ms: int, *, quarantined: bool = False) -> None:
        source = self._sources.get(noisy.key)
        quarantined = quarantined or noisy.key in self.quarantined
        log.warning(
            "device over its reject budget",
            extra={"device": noisy.key, "rejects": noisy.rejects, "final": noisy.final, "quarantined": quarantined},
        )
        if source is None or source.device_id is None or source.device_type is None:
            return  # unregistered senders: counted, but no device to report
        report = NoisyDevice(
            ts=now_ms, site=source.site, device_type=source.device_type, device_id=source.device_id,
            window_start_ms=noisy.window_start_ms, rejects=noisy.rejects, total=noisy.total,
            budget_per_min=self.budget.per_minute, final=noisy.final, quarantined=quarantined, worker=self.worker,
        )  # fmt: skip
        self.metrics.noisy_reports.inc()
        self.notices.offer(noisy_topic(source.site), report.model_dump_json().encode(), urgent=True)
