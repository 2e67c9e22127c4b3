"""What ingest writes to InfluxDB about itself (``ingest_stats``), so Grafana's platform board needs
no Prometheus: per worker and period, messages in, points stored, refused and spooled, rejects,
mean write and acknowledgement latency, spool bytes and messages in flight.

Best effort by design: a point that cannot be written while InfluxDB is away is dropped (the
counters keep running, so the next point's totals stay right, and /metrics has everything live).
"""

import asyncio
import logging
import time

from ingest.metrics import IngestMetrics
from store.influx import Influx, InfluxError
from store.series import line

log = logging.getLogger("estatewatch.ingest.selfstats")
STATS_MEASUREMENT = "ingest_stats"

# Counter samples turned into per-period deltas: (field, sample name, labels).
_COUNTERS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("messages", "ingest_messages_total", {}),
    ("points_written", "ingest_points_written_total", {}),
    ("points_refused", "ingest_points_refused_total", {}),
    ("points_spooled", "ingest_points_spooled_total", {}),
    ("duplicates", "ingest_duplicate_readings_total", {}),
    ("redeliveries", "ingest_redeliveries_total", {}),
    ("rejects", "ingest_rejects_total", {}),
    ("writes", "ingest_write_seconds_count", {}),
    ("write_seconds", "ingest_write_seconds_sum", {}),
    ("acks", "ingest_ack_seconds_count", {}),
    ("ack_seconds", "ingest_ack_seconds_sum", {}),
)


class SelfStats:
    def __init__(self, influx: Influx, metrics: IngestMetrics, worker: str, period_s: float) -> None:
        self.influx = influx
        self.metrics = metrics
        self.worker = worker
        self.period_s = period_s
        self._last = self._totals()

    def _totals(self) -> dict[str, float]:
        """Counter totals summed over their labels (messages by channel, rejects by reason)."""
        out: dict[str, float] = {}
        wanted = {sample: name for name, sample, _ in _COUNTERS}
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                name = wanted.get(sample.name)
                if name is not None:
                    out[name] = out.get(name, 0.0) + sample.value
        return out

    def line(self, now_ms: int) -> str:
        totals = self._totals()
        delta = {k: totals.get(k, 0.0) - self._last.get(k, 0.0) for k in totals}
        self._last = totals
        # Counts are integers and means floats, every time: one type per field, or InfluxDB refuses.
        fields: dict[str, object] = {k: int(delta.get(k, 0)) for k in (n for n, _, _ in _COUNTERS)
                                     if not k.endswith("_seconds")}  # fmt: skip
        fields["rate"] = round(float(delta.get("messages", 0.0)) / self.period_s, 3)
        for what in ("write", "ack"):
            count = delta.get(f"{what}s", 0.0)
            fields[f"{what}_mean_s"] = round(float(delta.get(f"{what}_seconds", 0.0)) / count if count else 0.0, 6)
        sample = self.metrics.registry.get_sample_value
        fields["spool_bytes"] = int(sample("ingest_spool_bytes") or 0)
        fields["inflight"] = int(sample("ingest_inflight_messages") or 0)
        fields["connected"] = int(sample("ingest_mqtt_connected") or 0)
        return line(STATS_MEASUREMENT, {"worker": self.worker}, dict(sorted(fields.items())), now_ms)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.period_s - time.time() % self.period_s)  # aligned: workers line up
            try:
                await self.influx.write(self.line(int(time.time() * 1000)).encode())
            except InfluxError as exc:
                log.debug("ingest_stats point dropped: %s", exc)
