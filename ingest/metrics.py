"""Ingest's Prometheus metrics, one registry per service instance."""

import math
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.registry import Collector


class LoopHistogram(Collector):
    """A histogram observed from the event loop only: no lock, a bisect and three additions (a
    prometheus_client Histogram takes ~1 us an observation, and ingest makes one per message)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            cumulative.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=self.sum)


class IngestMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages = Counter("ingest_messages", "MQTT messages received", ["channel"], registry=r)
        self.redeliveries = Counter("ingest_redeliveries", "messages the broker sent again (DUP flag)", registry=r)
        self.duplicates = Counter(
            "ingest_duplicate_readings", "readings whose device seq this worker saw already", registry=r
        )
        self.rejects = Counter("ingest_rejects", "messages rejected, by reason", ["reason"], registry=r)
        self.rejects_counted_only = Counter(
            "ingest_rejects_counted_only", "rejects past their device's budget: counted, not kept whole", registry=r
        )
        self.notices = Counter(
            "ingest_notices", "dead-letter notices and noisy-device reports, sent or dropped", ["outcome"], registry=r
        )
        self.noisy_reports = Counter("ingest_noisy_reports", "reports of devices past their reject budget", registry=r)
        self.quarantined = Counter("ingest_quarantined_devices", "noisy devices taken off the broker", registry=r)
        self.acknowledged = Counter(
            "ingest_acknowledged", "messages acknowledged, by how they ended", ["outcome"], registry=r
        )
        self.handler_errors = Counter(
            "ingest_handler_errors", "messages whose handling failed in ingest itself (a bug)", registry=r
        )
        self.points_written = Counter("ingest_points_written", "points InfluxDB accepted", registry=r)
        self.points_refused = Counter("ingest_points_refused", "points InfluxDB refused (400)", registry=r)
        self.spooled_points = Counter(
            "ingest_points_spooled", "points spooled to disk while InfluxDB was away", registry=r
        )
        self.influx_errors = Counter(
            "ingest_influx_errors", "failed InfluxDB writes, by status", ["status"], registry=r
        )
        self.batch_points = Histogram(
            "ingest_batch_points",
            "points per InfluxDB write",
            registry=r,
            buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10_000, 50_000),
        )
        self.write_seconds = Histogram(
            "ingest_write_seconds",
            "InfluxDB write latency",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.ack_seconds = LoopHistogram(
            "ingest_ack_seconds", "message arrival to acknowledgement",
            (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        r.register(self.ack_seconds)
        self.spool_bytes = Gauge("ingest_spool_bytes", "bytes waiting in the disk spool", registry=r)
        self.inflight = Gauge("ingest_inflight_messages", "messages received, not yet acknowledged", registry=r)
        self.missing = Gauge(
            "ingest_missing_readings", "readings missing (seq gaps) in the last completeness window", registry=r
        )
        # Label children resolved once: .labels() per message costs a lookup and a lock.
        self.messages_by_channel = {c: self.messages.labels(c) for c in ("telemetry", "event", "status", "invalid")}
        self.acknowledged_by = {o: self.acknowledged.labels(o) for o in ("stored", "spooled", "rejected")}
        for outcome in ("sent", "dropped"):
            self.notices.labels(outcome)  # shown from the start, at 0
        self.connected = Gauge("ingest_mqtt_connected", "1 while connected to the broker", registry=r)
