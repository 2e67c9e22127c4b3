"""The ingest service: ``async with IngestService(settings) as svc: await svc.wait()``.

MQTT: the project's MQTT 5 client (runtime/mqtt5; why not gmqtt, aiomqtt or paho is said there) in
a persistent session. A read's messages are judged, encoded and batched in one synchronous pass
(``on_messages``); each is acknowledged once its points are stored in InfluxDB or fsynced to the
spool, the PUBACKs of a batch in one socket write; a message judged bad is acknowledged once its
dead-letter record is. So an acknowledged message is never lost and a bad one is acknowledged once.
"""

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from devices.payloads.common import Status
from devices.topics import DeviceTopic, TopicError, parse_topic, subscription
from devices.types import Channel, DeviceType
from ingest.acks import Acks, MessageEntry
from ingest.admission import Admission, Admitted, Refused, Verdict, current_admission
from ingest.batcher import Batcher
from ingest.budget import RejectBudget
from ingest.completeness import Completeness, SeqTracker
from ingest.lines import encode, forget_series, series_key
from ingest.metrics import IngestMetrics
from ingest.rejects import (
    KEEP_PAYLOAD_BYTES,
    REJECTS_RP,
    Letter,
    Notices,
    QuarantineError,
    RejectBook,
    RejectCounts,
    Source,
    Stamps,
)
from ingest.selfstats import SelfStats
from ingest.settings import IngestSettings
from ingest.spool import Spool
from ingest.writer import Entry, Outcome, Writer
from runtime.health import HealthServer
from runtime.mqtt5.packets import Publish
from runtime.stream import UNSPECIFIED_ERROR, StreamService
from store.devices import DeviceAdmin
from store.dynsec import DYNSEC_RESPONSE, DYNSEC_TOPIC, DynsecCalls, DynsecError, client_enabled_command
from store.influx import Influx, InfluxError
from store.registry.db import DeviceInfo, Registry
from store.retention import ensure_policy

log = logging.getLogger("estatewatch.ingest")
# An unknown device makes the worker re-read the registry (it may have been registered through the
# API a moment ago), at most this often; its message waits for that read instead of being rejected.
UNKNOWN_REFRESH_MIN_S = 1.0
DYNSEC_TIMEOUT_S = 10.0
# The plugin answers in milliseconds; a broker that refuses our $CONTROL publish does not answer at all.
RIGHTS_CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Route:
    """A registered device's topic: parsed, its device, and its series key for models without tag
    fields (``encode`` makes the others)."""

    topic: DeviceTopic
    device: DeviceInfo
    series: str


class IngestService(StreamService):
    def __init__(self, settings: IngestSettings) -> None:
        super().__init__("ingest", log, settings.drain_s)
        self.settings = settings
        self.metrics = IngestMetrics()
        self.seqs = SeqTracker()
        self.devices: dict[tuple[str, DeviceType, str], DeviceInfo] = {}
        self.sites: set[str] = set()
        self.admission = Admission(settings.ingest_future_tolerance_s)
        self._last_refresh = 0.0
        self._refresh_lock = asyncio.Lock()
        self._dynsec = DynsecCalls()
        self._started = False
        # The hot path's state: topics of registered devices parsed (cleared at every registry read),
        # per-read tallies, and messages received but not yet acknowledged.
        self._routes: dict[str, Route] = {}
        self._channel_counts = dict.fromkeys(Channel, 0)
        self._inflight = 0
        self.metrics.inflight.set_function(lambda: self._inflight)
        self.acks = Acks(self.ack, self.metrics.acknowledged_by)

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        s = self.settings
        self.influx = await self.stack.enter_async_context(
            Influx(s.influx_url, s.influx_database, timeout_s=s.ingest_write_timeout_s)
        )
        self.registry = await self.stack.enter_async_context(Registry(s.db_url))
        await self._refresh_devices()
        await self._prepare_influx()
        self.spool = Spool(s.spool_dir, s.ingest_spool_max_mb * 1024 * 1024)
        if self.spool:
            log.warning("spool holds %d batches from before; replaying", self.spool.depth)
        self.metrics.spool_bytes.set(self.spool.bytes)
        self.writer = Writer(
            self.influx, self.spool, self.metrics, spool_after_s=s.ingest_spool_after_s, gzip_mode=s.ingest_gzip,
            ensure_policies=self._ensure_policies,
        )  # fmt: skip
        self.batcher = Batcher(self.writer, s.ingest_batch_size, s.ingest_batch_ms)
        self.notices = Notices(s.ingest_notice_queue, self.metrics)
        counts = RejectCounts(s.ingest_client_id, s.ingest_reject_count_s, self.batcher.add, Stamps())
        self.rejects = RejectBook(
            self.metrics,
            s.ingest_client_id,
            RejectBudget(s.ingest_reject_budget_per_min, s.ingest_rejects_kept_per_day),
            counts,
            self.notices,
            self.batcher.add,
            quarantine_per_min=s.ingest_quarantine_per_min,
        )
        if s.ingest_metrics_port:
            self.health = await self.stack.enter_async_context(
                HealthServer(s.ingest_metrics_host, s.ingest_metrics_port, self.metrics.registry, self.problem)
            )
        self._start_ingest_tasks()
        await self._connect()
        if s.ingest_quarantine_per_min:
            await self._check_quarantine_rights()
        self._started = True

    def _start_ingest_tasks(self) -> None:
        s = self.settings
        self.task("batch-flush", self.batcher.flush_forever())
        self.task("spool-replay", self.writer.replay_forever())
        # A registry hiccup (locked, restarting) is retried; one that lasts is the end of this worker.
        self.every("registry-refresh", s.ingest_registry_refresh_s, self._refresh_devices,
                   retry=(SQLAlchemyError, OSError))  # fmt: skip
        self.task("reject-counts", self.rejects.counts.flush_forever(self.rejects.sweep))
        self.task("notices", self.notices.publish_forever(self.publish))
        for i in range(s.ingest_writers):
            self.task(f"writer-{i}", self.batcher.write_forever())
        if s.ingest_quarantine_per_min:
            self.task("quarantine", self.rejects.quarantine_forever(self._quarantine))
        if s.ingest_completeness_s:
            self.task("completeness", Completeness(self.influx, self.metrics, s.ingest_completeness_s).run_forever())
        if s.ingest_stats_s:
            stats = SelfStats(self.influx, self.metrics, s.ingest_client_id, s.ingest_stats_s)
            self.task("self-stats", stats.run_forever())

    async def drain(self) -> None:
        """Flush what was accepted, and let its PUBACKs go; the rest stays unacknowledged (redelivered)."""
        if not hasattr(self, "batcher"):
            return
        await self.rejects.counts.flush()
        await self.batcher.drain()
        await self.handlers_done()
        self.acks.flush()

    # -- set-up ----------------------------------------------------------------------------------
    async def _prepare_influx(self) -> None:
        try:
            await self.influx.create_database()
            await self._ensure_policies()
        except InfluxError as exc:
            log.warning("cannot prepare InfluxDB yet (%s); the writer does it when InfluxDB answers", exc)
        self.admission = await current_admission(self.influx, self.settings)

    async def _ensure_policies(self) -> None:
        said = await ensure_policy(self.influx, REJECTS_RP, self.settings.ingest_rejects_retention)
        if said:
            log.info(said)

    async def _refresh_devices(self) -> None:
        self._last_refresh = time.monotonic()
        self.devices = await self.registry.device_index()
        self.sites = {site for site, _, _ in self.devices}
        forget_series()
        self._routes = {}

    async def _refresh_for_unknown(self) -> None:
        """One registry read per UNKNOWN_REFRESH_MIN_S, shared by every message waiting on it."""
        asked = time.monotonic()
        async with self._refresh_lock:
            if self._last_refresh >= asked:
                return  # another message's refresh started after this one asked: it is current
            await asyncio.sleep(max(0.0, self._last_refresh + UNKNOWN_REFRESH_MIN_S - time.monotonic()))
            await self._refresh_devices()

    async def _connect(self) -> None:
        s = self.settings
        await self.connect_stream(
            s.mqtt,
            client_id=s.ingest_client_id,
            session_expiry_s=s.ingest_session_expiry_s,
            receive_maximum=s.ingest_receive_maximum,
            share_group=s.ingest_share_group,
            filters=[subscription(ch) for ch in Channel],
            connected_gauge=self.metrics.connected,
            own_filters=(DYNSEC_RESPONSE,) if s.ingest_quarantine_per_min else (),
        )

    def problem(self) -> str | None:
        """None when healthy, else what is wrong (served on /healthz)."""
        if not self._started:
            return "starting"
        if not self.connected:
            return "not connected to the broker"
        if self.writer.holding:
            return f"not acknowledging: {self.writer.holding}"
        if self.spool.bytes >= self.spool.max_bytes:
            return "spool full: InfluxDB has been away too long"
        return super().problem()

    # -- quarantine ------------------------------------------------------------------------------
    async def _dynsec_call(
        self, *commands: dict[str, Any], timeout_s: float = DYNSEC_TIMEOUT_S
    ) -> list[dict[str, Any]]:
        message, futures = self._dynsec.request(*commands)
        await self.publish(DYNSEC_TOPIC, message)
        return await self._dynsec.results(futures, timeout_s)

    async def _check_quarantine_rights(self) -> None:
        """Quarantine needs dynamic-security rights: find out at start, not at the first flood."""
        try:
            await self._dynsec_call({"command": "getDefaultACLAccess"}, timeout_s=RIGHTS_CHECK_TIMEOUT_S)
        except (TimeoutError, DynsecError) as exc:
            raise ConnectionError(
                "ESTATEWATCH_INGEST_QUARANTINE_PER_MIN is set, but the broker does not answer this user's "
                f"dynamic-security commands ({exc!r}): give the ingest broker user the admin role, or set it to 0"
            ) from None

    async def _quarantine(self, source: Source) -> None:
        from store.dynsec import device_username

        assert source.device_id is not None
        try:
            await self._dynsec_call(client_enabled_command(device_username(source.site, source.device_id), False))
            await DeviceAdmin(self.registry).set_enabled(source.site, source.device_id, False)
        except (TimeoutError, DynsecError, OSError) as exc:
            raise QuarantineError(repr(exc)) from exc
        log.warning("quarantined a noisy device: its broker client and registry entry are disabled",
                    extra={"device": source.key})  # fmt: skip
        await self._refresh_devices()

    # -- messages --------------------------------------------------------------------------------
    def on_messages(self, messages: list[Publish], generation: int) -> None:
        """The hot path: a read's messages judged, encoded and batched here, without a task or a
        future each; what needs waiting (an unknown device, a reject) goes to ``on_message``."""
        now_ms = int(time.time() * 1000)
        received = time.perf_counter()
        routes, judge, add, settled = self._routes, self.admission.judge_device, self.batcher.add, self._settled
        seen, counts = self.seqs.seen_before, self._channel_counts
        duplicates = redeliveries = 0
        for m in messages:
            route = routes.get(m.topic) or self._route(m.topic)
            if route is None:
                self.handle_alone(m, generation)
                continue
            verdict = judge(route.topic, route.device, m.payload, now_ms)
            if type(verdict) is not Admitted:
                self.handle_alone(m, generation)
                continue
            t, items = route.topic, verdict.items
            if isinstance(items, Status):
                lines = [encode(route.device, t.channel, items, route.series)]
            else:
                for r in items:
                    duplicates += seen(t.site, t.device_id, r.seq)
                lines = [encode(route.device, t.channel, r, route.series) for r in items]
            payload = m.payload
            head = payload if len(payload) <= KEEP_PAYLOAD_BYTES else payload[:KEEP_PAYLOAD_BYTES]
            add(MessageEntry(lines, settled, generation, m.packet_id, m.topic, head, len(payload), received))
            counts[t.channel] += 1
            redeliveries += m.dup
        self._inflight += sum(counts.values())
        for channel, n in counts.items():
            if n:
                self.metrics.messages_by_channel[channel.value].inc(n)
                counts[channel] = 0
        if duplicates:
            self.metrics.duplicates.inc(duplicates)
        if redeliveries:
            self.metrics.redeliveries.inc(redeliveries)

    def _route(self, topic: str) -> Route | None:
        """A registered device's topic, parsed once per registry read; None sends it the slow way."""
        try:
            t = parse_topic(topic)
        except TopicError:
            return None
        device = self.devices.get((t.site, t.device_type, t.device_id))
        if device is None:
            return None
        route = self._routes[topic] = Route(t, device, series_key(device, t.channel))
        return route

    def _settled(self, entry: Entry) -> None:
        assert isinstance(entry, MessageEntry)
        if entry.outcome is Outcome.REFUSED:  # InfluxDB refuses its lines: a dead letter, then the ack
            self.handle_later(self._refused(entry))
            return
        self._inflight -= 1
        self.acks.add(entry.generation, entry.packet_id, entry.outcome.value)  # type: ignore[union-attr]
        self.metrics.ack_seconds.observe(time.perf_counter() - entry.received)

    async def _refused(self, entry: MessageEntry) -> None:
        try:
            refused = Refused("influx_refused", entry.refusal, parse_topic(entry.topic), registered=True)
            await self._reject(Letter(entry.topic, entry.head, entry.size), refused.reason, refused.detail, refused)
        except Exception:  # as in on_message: a bug in ingest must not leave the message unacknowledged
            self.metrics.handler_errors.inc()
            log.exception("could not dead-letter a message InfluxDB refused; acknowledging it as an error")
            self.ack(entry.generation, [entry.packet_id], UNSPECIFIED_ERROR)
            return
        finally:
            self._inflight -= 1
        self.acks.add(entry.generation, entry.packet_id, "rejected")

    async def on_message(self, message: Publish) -> int:
        """One message the hot path could not take: a registry read, a reject, or a bug to survive."""
        topic, payload = message.topic, message.payload
        if topic == DYNSEC_RESPONSE:
            self._dynsec.answer(payload)
            return 0
        received = time.perf_counter()
        self._inflight += 1
        letter = Letter.of(topic, payload)
        try:
            if message.dup:
                self.metrics.redeliveries.inc()
            verdict = await self.admission.judge(topic, payload, self._lookup, int(time.time() * 1000))
            del payload, message  # from here on only its lines or its letter: 256 KiB messages are not held
            outcome = await self._settle(verdict, letter)
        except Exception:  # the one catch-all: see below
            # A bug in ingest itself. Nothing may escape (no PUBACK would go out and the message
            # would come back on every reconnect): tried once as a dead letter, else let go.
            self.metrics.handler_errors.inc()
            log.exception("unexpected error handling a message on %s", topic[:200])
            try:
                outcome = await self._reject(letter, "internal_error", "see ingest logs", None)
            except Exception:  # the dead-letter path itself failed: a bug, logged
                log.exception("could not even dead-letter it; acknowledging it as an error")
                return UNSPECIFIED_ERROR
        finally:
            self._inflight -= 1
            self.metrics.ack_seconds.observe(time.perf_counter() - received)
        self.metrics.acknowledged_by[outcome].inc()
        return 0

    async def _lookup(self, site: str, device_type: DeviceType, device_id: str) -> DeviceInfo | None:
        """The registry's device; an unknown one waits for a fresh read (it may be minutes old)."""
        key = (site, device_type, device_id)
        device = self.devices.get(key)
        if device is None:
            await self._refresh_for_unknown()
            device = self.devices.get(key)
        return device

    async def _settle(self, verdict: Verdict, letter: Letter) -> str:
        """Store the message or dead-letter it; returns how it ended once that is durable."""
        channel = verdict.topic.channel.value if verdict.topic else "invalid"
        self.metrics.messages_by_channel[channel].inc()
        if isinstance(verdict, Refused):
            return await self._reject(letter, verdict.reason, verdict.detail, verdict)
        t, device = verdict.topic, verdict.device
        assert isinstance(device, DeviceInfo)
        items = verdict.items
        if isinstance(items, Status):
            entry = Entry([encode(device, t.channel, items)])
        else:
            for r in items:
                if self.seqs.seen_before(t.site, t.device_id, r.seq):
                    self.metrics.duplicates.inc()
            entry = Entry([encode(device, t.channel, r) for r in items])
        self.batcher.add(entry)
        outcome = await entry.done
        if outcome is Outcome.REFUSED:
            refused = Refused("influx_refused", entry.refusal, t, registered=True)
            return await self._reject(letter, refused.reason, refused.detail, refused)
        return str(outcome.value)

    def _source(self, letter: Letter, verdict: Refused | None) -> Source:
        """Whom a reject is charged to: its registered device, or its site's unregistered senders."""
        t = verdict.topic if verdict is not None else None
        if t is not None and verdict is not None and verdict.registered:
            return Source(t.site, t.device_type, t.device_id)
        parts = letter.topic.split("/")
        site = parts[2] if len(parts) > 2 and parts[2] in self.sites else "_invalid"
        return Source(site)

    async def _reject(self, letter: Letter, reason: str, detail: str, verdict: Refused | None) -> str:
        await self.rejects.reject(letter, reason, detail, self._source(letter, verdict))
        return "rejected"
