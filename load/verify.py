"""After a load run: was every acknowledged reading stored, once? And how fast did it become queryable?

Reads the run's ledgers (what each device sent and the broker acknowledged) and asks InfluxDB for
the ``seq`` of every stored reading of those devices in the run's time window.
"""

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devices.types import Channel, DeviceType
from load.ledger import Ledger, read_probe
from store.influx import Influx, quote_ident, quote_literal
from store.series import all_fields, measurement

WINDOW_MS = 60_000
MARGIN_MS = 120_000  # readings stamped a little before the start or after the end (clock, backlog)
EXAMPLES = 10
# Times as integer nanoseconds: InfluxDB 1.6 reads "1796141204669ms" through a float (256 ns steps).
NS = 1_000_000


@dataclass
class Latency:
    samples: int = 0
    timeouts: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


@dataclass
class Verdict:
    devices: int = 0
    acked: int = 0
    stored: int = 0  # distinct (device, seq) found
    missing: int = 0  # acknowledged, not stored: loss
    duplicates: int = 0  # stored more than once (different timestamps)
    unacked: int = 0  # sent, no PUBACK by the end (not promised; stored or not)
    unacked_stored: int = 0
    refused: int = 0  # the broker said no (PUBACK failure code), or paho could not queue
    unexpected: int = 0  # stored, never sent by this run's devices
    examples: dict[str, list[str]] = field(default_factory=dict)
    latency: Latency = field(default_factory=Latency)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.unexpected == 0 and self.devices > 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def latency_of(samples: list[tuple[float, float | None]]) -> Latency:
    done = sorted(v for _, v in samples if v is not None)
    return Latency(
        samples=len(samples),
        timeouts=sum(1 for _, v in samples if v is None),
        p50_ms=percentile(done, 0.5),
        p90_ms=percentile(done, 0.9),
        p99_ms=percentile(done, 0.99),
        max_ms=done[-1] if done else None,
    )


def _measurements(types: set[str]) -> list[str]:
    known = all_fields()
    out = []
    for t in sorted(types):
        for channel in (Channel.TELEMETRY, Channel.EVENT):
            name = measurement(DeviceType(t), channel)
            if name in known and "seq" in known[name]:
                out.append(name)
    return out


async def stored_seqs(influx: Influx, site: str, measurements: list[str], start_ms: int, end_ms: int,
                      progress: Callable[[str], None] = lambda s: None) -> dict[str, Counter[int]]:  # fmt: skip
    """Every stored seq per device (with how often) between the two times, window by window.

    Checked against count() over the same range, so a server that truncates large answers
    (InfluxDB's max-row-limit) cannot make readings look missing.
    """
    found: dict[str, Counter[int]] = {}
    site_q = quote_literal(site)
    for name in measurements:
        m = quote_ident(name)
        rows = 0
        for a in range(start_ms, end_ms, WINDOW_MS):
            b = min(end_ms, a + WINDOW_MS)
            where = f'"site" = {site_q} AND time >= {a * NS} AND time < {b * NS}'
            q = f'SELECT "seq" FROM {m} WHERE {where} GROUP BY "device_id"'
            for series in (await influx.query(q))[0]:
                counter = found.setdefault(series.tags["device_id"], Counter())
                for _, seq in series.values:
                    if seq is not None:
                        counter[int(seq)] += 1
                        rows += 1
        q = f'SELECT count("seq") FROM {m} WHERE "site" = {site_q} AND time >= {start_ms * NS} AND time < {end_ms * NS}'
        result = (await influx.query(q))[0]
        counted = int(result[0].values[0][1]) if result else 0
        if counted != rows:
            raise RuntimeError(f"{name}: InfluxDB counts {counted} readings but returned {rows}: answers truncated?")
        progress(f"  {name}: {rows:,} readings")
    return found


def judge(ledger: Ledger, stored: dict[str, Counter[int]]) -> Verdict:
    v = Verdict(devices=len(ledger.devices))
    examples: dict[str, list[str]] = {"missing": [], "duplicates": [], "unexpected": []}

    def note(kind: str, device: str, seqs: set[int] | list[int]) -> None:
        if len(examples[kind]) < EXAMPLES and seqs:
            shown = sorted(seqs)[:5]
            examples[kind].append(f"{device}: seq {', '.join(map(str, shown))}{' ...' if len(seqs) > 5 else ''}")

    for device_id, record in ledger.devices.items():
        have = stored.get(device_id, Counter())
        seqs = set(have)
        v.acked += len(record.acked)
        v.unacked += len(record.unacked)
        v.refused += len(record.refused)
        v.stored += len(seqs)
        missing = record.acked - seqs
        v.missing += len(missing)
        note("missing", device_id, missing)
        dup = [s for s, n in have.items() if n > 1]
        v.duplicates += len(dup)
        note("duplicates", device_id, dup)
        v.unacked_stored += len(record.unacked & seqs)
        unexpected = seqs - record.acked - record.unacked - record.refused
        v.unexpected += len(unexpected)
        note("unexpected", device_id, unexpected)
    v.examples = {k: e for k, e in examples.items() if e}
    return v


async def verify(folder: Path, influx_url: str, database: str,
                 progress: Callable[[str], None] = lambda s: None) -> Verdict:  # fmt: skip
    ledger = Ledger.read(folder)
    start = int(ledger.started * 1000) - MARGIN_MS
    end = int(ledger.ended * 1000) + MARGIN_MS
    types = {r.type for r in ledger.devices.values()}
    async with Influx(influx_url, database, timeout_s=120) as influx:
        stored = await stored_seqs(influx, ledger.site, _measurements(types), start, end, progress)
    verdict = judge(ledger, stored)
    verdict.latency = latency_of(read_probe(folder))
    return verdict


def verify_sync(folder: Path, influx_url: str, database: str, progress: Callable[[str], None]) -> Verdict:
    return asyncio.run(verify(folder, influx_url, database, progress))
