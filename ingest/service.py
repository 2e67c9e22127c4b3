"""The ingest service: ``async with IngestService(settings) as svc: await svc.wait()``.

MQTT client: gmqtt with MQTT 5 and ``optimistic_acknowledgement=False``, which sends a message's
PUBACK only when its async handler returns. The handler returns once the message's points are stored
in InfluxDB or fsynced to the spool, so an acknowledged message is never lost. aiomqtt acknowledges
before the application sees a message (its issue 345); paho could ack manually but runs its network
loop in a thread and measured ~44k msg/s against gmqtt's ~119k on this machine class.
"""

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Self

from devices.catalog import PayloadError, parse_payload
from devices.payloads.common import Status
from devices.topics import TopicError, parse_topic, subscription
from devices.types import Channel, DeviceType
from ingest.batcher import Batcher
from ingest.completeness import Completeness, SeqTracker
from ingest.config import IngestSettings
from ingest.lines import encode, forget_series
from ingest.metrics import IngestMetrics
from ingest.rejects import Rejects
from ingest.selfstats import SelfStats
from ingest.spool import Spool
from ingest.writer import Entry, Writer
from store.consumer import StreamConsumer
from store.health import HealthServer
from store.influx import Influx, InfluxError
from store.registry.db import DeviceInfo, Registry

log = logging.getLogger("estatewatch.ingest")
REGISTRY_REFRESH_S = 30.0
# An unknown device makes the worker re-read the registry (it may have been registered through the
# API a moment ago), at most this often; its message waits for that read instead of being rejected.
UNKNOWN_REFRESH_MIN_S = 1.0


def _duration_ms(text: str) -> int:
    """InfluxQL durations as SHOW RETENTION POLICIES prints them, e.g. '168h0m0s'; 0 means forever."""
    total, number = 0.0, ""
    units = {"h": 3_600_000, "m": 60_000, "s": 1000}
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number = ""
    return int(total)


class IngestService(StreamConsumer):
    def __init__(self, settings: IngestSettings) -> None:
        super().__init__("ingest", log)
        self.settings = settings
        self.metrics = IngestMetrics()
        self.seqs = SeqTracker()
        self.devices: dict[tuple[str, DeviceType, str], DeviceInfo] = {}
        self.max_age_ms = 0
        self._last_refresh = 0.0
        self._refresh_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        s = self.settings
        self._opening()
        try:
            self.influx = await self._stack.enter_async_context(
                Influx(s.influx_url, s.influx_database, timeout_s=s.ingest_write_timeout_s)
            )
            self.registry = await self._stack.enter_async_context(Registry(s.db_url))
            await self._refresh_devices()
            await self._prepare_influx()
            self.spool = Spool(s.spool_dir, s.ingest_spool_max_mb * 1024 * 1024)
            if self.spool:
                log.warning("spool holds %d batches from before; replaying", self.spool.depth)
            self.metrics.spool_bytes.set(self.spool.bytes)
            self.rejects = Rejects(self.metrics, s.ingest_client_id, self._publish)
            self.writer = Writer(
                self.influx,
                self.spool,
                self.metrics,
                spool_after_s=s.ingest_spool_after_s,
                gzip_mode=s.ingest_gzip,
                on_reject=self._influx_refused,
            )
            self.batcher = Batcher(self.writer, s.ingest_batch_size, s.ingest_batch_ms)
            if s.ingest_metrics_port:
                self.health = await self._stack.enter_async_context(
                    HealthServer(s.ingest_metrics_host, s.ingest_metrics_port, self.metrics.registry, self.problem)
                )
            self._start_ingest_tasks()
            await self._connect()
        except BaseException:
            await self._close()
            raise
        return self

    def _start_ingest_tasks(self) -> None:
        jobs: dict[str, Coroutine[Any, Any, None]] = {
            "batch-flush": self.batcher.flush_forever(),
            "spool-replay": self.writer.replay_forever(),
            "registry-refresh": self._refresh_forever(),
        }
        for i in range(self.settings.ingest_writers):
            jobs[f"writer-{i}"] = self.batcher.write_forever()
        if self.settings.ingest_completeness_s:
            jobs["completeness"] = Completeness(
                self.influx, self.metrics, self.settings.ingest_completeness_s
            ).run_forever()
        if self.settings.ingest_stats_s:
            jobs["self-stats"] = SelfStats(
                self.influx, self.metrics, self.settings.ingest_client_id, self.settings.ingest_stats_s
            ).run_forever()
        self._start_tasks(jobs)

    async def drain(self) -> None:
        """Flush what was accepted within the drain deadline; the rest stays unacknowledged (redelivered)."""
        self.accepting = False
        if not hasattr(self, "batcher"):
            return
        try:
            await asyncio.wait_for(self.batcher.drain(), self.settings.ingest_drain_s)
        except TimeoutError:
            log.error(
                "drain deadline of %.0f s passed; unflushed messages will be redelivered", self.settings.ingest_drain_s
            )
        await asyncio.sleep(0.05)  # let the handlers return, so gmqtt sends their PUBACKs

    # -- set-up ----------------------------------------------------------------------------------
    async def _prepare_influx(self) -> None:
        try:
            await self.influx.create_database()
            policies = (await self.influx.query(f'SHOW RETENTION POLICIES ON "{self.influx.database}"'))[0]
        except InfluxError as exc:
            log.warning("cannot read the retention policy yet (%s); not rejecting old readings", exc)
            return
        for series in policies:
            for row in series.rows():
                if row.get("default"):
                    self.max_age_ms = _duration_ms(str(row.get("duration", "0s")))

    async def _refresh_devices(self) -> None:
        self._last_refresh = time.monotonic()
        self.devices = await self.registry.device_index()
        forget_series()

    async def _refresh_for_unknown(self) -> None:
        """One registry read per UNKNOWN_REFRESH_MIN_S, shared by every message waiting on it."""
        asked = time.monotonic()
        async with self._refresh_lock:
            if self._last_refresh >= asked:
                return  # another message's refresh started after this one asked: it is current
            await asyncio.sleep(max(0.0, self._last_refresh + UNKNOWN_REFRESH_MIN_S - time.monotonic()))
            await self._refresh_devices()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REGISTRY_REFRESH_S)
            await self._refresh_devices()

    async def _connect(self) -> None:
        s = self.settings
        await self._connect_stream(
            s.mqtt,
            client_id=s.ingest_client_id,
            session_expiry_s=s.ingest_session_expiry_s,
            receive_maximum=s.ingest_receive_maximum,
            share_group=s.ingest_share_group,
            filters=[subscription(ch) for ch in Channel],
            connected_gauge=self.metrics.connected,
        )

    def _publish(self, topic: str, payload: bytes) -> None:
        if self._client is not None and self.connected:
            self._client.publish(topic, payload, qos=1)

    def problem(self) -> str | None:
        """None when healthy, else what is wrong (served on /healthz)."""
        if not self.connected:
            return "not connected to the broker"
        if self.spool.bytes >= self.spool.max_bytes:
            return "spool full: InfluxDB has been away too long"
        if any(t.done() for t in self._tasks):
            return "a worker task has stopped"
        return None

    # -- messages --------------------------------------------------------------------------------
    async def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        if not self.accepting:
            # Never acknowledged: the broker redelivers it after this worker (or its session) returns.
            await self._until_closed()
            return 0
        received = time.perf_counter()
        self.metrics.inflight.inc()
        try:
            entry = await self._accept(topic, payload, properties)
            self.batcher.add(entry)
            await entry.done
        except Exception:
            # A bug must not take the worker down, nor lose the message: it goes to the dead letters.
            log.exception("unexpected error handling a message on %s", topic[:200])
            entry = Entry([self.rejects.record(topic, payload, "internal_error", "see ingest logs")])
            self.batcher.add(entry)
            await entry.done
        finally:
            self.metrics.inflight.dec()
            self.metrics.ack_seconds.observe(time.perf_counter() - received)
        return 0

    def _reject(self, topic: str, payload: bytes, reason: str, detail: str) -> Entry:
        return Entry([self.rejects.record(topic, payload, reason, detail)], topic=topic, payload=payload)

    def _influx_refused(self, entry: Entry, detail: str) -> None:
        self.batcher.add(Entry([self.rejects.record(entry.topic, entry.payload, "influx_refused", detail)]))

    async def _accept(self, topic: str, payload: bytes, properties: dict[str, Any]) -> Entry:
        if properties.get("dup"):
            self.metrics.redeliveries.inc()
        try:
            t = parse_topic(topic)
        except TopicError as exc:
            self.metrics.messages_by_channel["invalid"].inc()
            return self._reject(topic, payload, exc.reason, str(exc))
        self.metrics.messages_by_channel[t.channel.value].inc()
        key = (t.site, t.device_type, t.device_id)
        device = self.devices.get(key)
        if device is None:
            await self._refresh_for_unknown()
            device = self.devices.get(key)
        if device is None:
            return self._reject(topic, payload, "unknown_device", f"no {t.device_type} {t.device_id!r} at {t.site!r}")
        if not device.enabled:
            return self._reject(topic, payload, "device_disabled", f"{t.device_id} is disabled")
        try:
            parsed = parse_payload(t.device_type, t.channel, payload)
        except PayloadError as exc:
            return self._reject(topic, payload, exc.reason, str(exc))
        if isinstance(parsed, Status):
            return Entry([encode(device, t.channel, parsed)], topic=topic, payload=payload)
        now_ms = int(time.time() * 1000)
        newest = max(r.ts for r in parsed)
        if newest > now_ms + self.settings.ingest_future_tolerance_s * 1000:
            return self._reject(
                topic,
                payload,
                "future",
                f"ts {newest} is ahead of the clock by more than {self.settings.ingest_future_tolerance_s} s",
            )
        oldest = min(r.ts for r in parsed)
        if self.max_age_ms and oldest < now_ms - self.max_age_ms:
            return self._reject(topic, payload, "too_old", f"ts {oldest} is older than the retention policy")
        for r in parsed:
            if self.seqs.seen_before(t.site, t.device_id, r.seq):
                self.metrics.duplicates.inc()
        return Entry([encode(device, t.channel, r) for r in parsed], topic=topic, payload=payload)
