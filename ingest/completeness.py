"""Loss and duplicates, from the devices' ``seq``.

Duplicates are seen where they arrive: each worker remembers the recent seqs per device. Loss is
judged from what InfluxDB holds, so it stays right with any number of workers sharing the load:
every period, per device, the readings stored in the window against the seq range they span.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from devices.catalog import CATALOG
from devices.types import Channel
from ingest.metrics import IngestMetrics
from store.influx import Influx, InfluxError
from store.series import COMPLETENESS_BY_TYPE_MEASUREMENT, line, measurement

log = logging.getLogger("estatewatch.ingest.completeness")
COMPLETENESS_MEASUREMENT = "ingest_completeness"
WINDOW_BITS = 256


class SeqTracker:
    """Per device, the highest seq seen and a bitmap of the WINDOW_BITS below it."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}

    def seen_before(self, site: str, device_id: str, seq: int) -> bool:
        key = (site, device_id)
        high, bits = self._seen.get(key, (-1, 0))
        if seq > high:
            shift = seq - high
            bits = ((bits << shift) | 1) & ((1 << WINDOW_BITS) - 1) if shift < WINDOW_BITS else 1
            self._seen[key] = (seq, bits)
            return False
        offset = high - seq
        if offset >= WINDOW_BITS:
            return False  # too old to tell; counted as new
        if bits >> offset & 1:
            return True
        self._seen[key] = (high, bits | 1 << offset)
        return False


@dataclass
class DeviceWindow:
    received: int = 0
    low: int | None = None
    high: int | None = None

    def add(self, count: int, low: int, high: int) -> None:
        self.received += count
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)


def _measurements_regex() -> str:
    names = [measurement(t, Channel.TELEMETRY) for t in CATALOG]
    names += [measurement(t, Channel.EVENT) for t, s in CATALOG.items() if s.event is not None]
    return "/^(" + "|".join(sorted(names)) + ")$/"


def completeness_line(key: tuple[str, str, str], received: int, expected: int, low: int, high: int, end_ms: int) -> str:
    """One device's ``ingest_completeness`` point: what arrived against the seq range it spans."""
    site, device_type, device_id = key
    fields = {
        "received": received,
        "expected": expected,
        "missing": max(0, expected - received),
        "first_seq": low,
        "last_seq": high,
    }
    return line(
        COMPLETENESS_MEASUREMENT, {"device_id": device_id, "device_type": device_type, "site": site}, fields, end_ms
    )


def by_type_lines(sums: dict[tuple[str, str], tuple[int, int]], end_ms: int) -> list[str]:
    """``ingest_completeness_by_type`` points: (received, expected) per (site, device type)."""
    out = []
    for (site, device_type), (received, expected) in sorted(sums.items()):
        fields = {"received": received, "expected": expected, "missing": max(0, expected - received)}
        out.append(line(COMPLETENESS_BY_TYPE_MEASUREMENT, {"device_type": device_type, "site": site}, fields, end_ms))
    return out


class Completeness:
    def __init__(self, influx: Influx, metrics: IngestMetrics, period_s: int, lateness_s: int = 30) -> None:
        self.influx = influx
        self.metrics = metrics
        self.period_ms = period_s * 1000
        self.lateness_ms = lateness_s * 1000
        self._last_high: dict[tuple[str, str, str], int] = {}

    async def run_once(self, end_ms: int) -> int:
        """Write one ``ingest_completeness`` point per device for [end - period, end); returns missing."""
        start_ms = end_ms - self.period_ms
        query = (
            f"SELECT count(seq), min(seq), max(seq) FROM {_measurements_regex()} "
            f"WHERE time >= {start_ms}ms AND time < {end_ms}ms GROUP BY site, device_type, device_id"
        )
        windows: dict[tuple[str, str, str], DeviceWindow] = {}
        for series in (await self.influx.query(query))[0]:
            key = (series.tags.get("site", ""), series.tags.get("device_type", ""), series.tags.get("device_id", ""))
            _, count, low, high = series.values[0]
            windows.setdefault(key, DeviceWindow()).add(int(count), int(low), int(high))
        lines = []
        total_missing = 0
        by_type: dict[tuple[str, str], list[int]] = {}
        for key, w in windows.items():
            assert w.low is not None and w.high is not None
            previous = self._last_high.get(key)
            low = previous + 1 if previous is not None and previous < w.low else w.low
            expected = w.high - low + 1
            missing = max(0, expected - w.received)
            total_missing += missing
            self._last_high[key] = w.high
            lines.append(completeness_line(key, w.received, expected, low, w.high, end_ms))
            sums = by_type.setdefault(key[:2], [0, 0])
            sums[0] += w.received
            sums[1] += expected
        lines += by_type_lines({k: (r, e) for k, (r, e) in by_type.items()}, end_ms)
        if lines:
            await self.influx.write("\n".join(lines).encode())
        self.metrics.missing.set(total_missing)
        return total_missing

    async def run_forever(self) -> None:
        while True:
            now = int(time.time() * 1000) - self.lateness_ms
            end = now - now % self.period_ms  # aligned, so every worker writes the same points
            try:
                await self.run_once(end)
            except InfluxError as exc:
                log.warning("completeness check skipped: %s", exc)
            next_end = end + self.period_ms + self.lateness_ms
            await asyncio.sleep(max(1.0, next_end / 1000 - time.time()))
