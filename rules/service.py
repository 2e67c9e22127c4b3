"""The rules service: ``async with RulesService(settings) as svc: await svc.wait()``.

On start it rebuilds the engine: plate state from its last checkpoint in the registry plus the
InfluxDB history since (or months of history without one), and the last hour of everything else; it
hands every change that rebuild produces to the alert book, which ignores what it already holds: a
restart neither loses an open incident nor raises it twice. Then it consumes the live stream, QoS 1
with a persistent session, acknowledging a message only after its alert changes (and, in the same
transaction, their copies and notifications) are in the registry.

It is also the one publisher of the alert outbox (``store/outbox.py``): the MQTT copies and commands,
the InfluxDB lines, and one dispatcher per robot, for its own changes and for people's alike.
"""

import asyncio
import contextlib
import gc
import json
import logging
import time
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError

from devices.alerts import Action, AlertChange
from devices.estate import load_estate
from devices.notices import noisy_topic
from devices.topics import subscription
from devices.types import Channel
from rules import rebuild
from rules.config import ConfigError, RulesConfig
from rules.engine import Engine
from rules.notify.dispatch import Dispatcher
from rules.notify.messages import Directory
from rules.notify.outgoing import notifications
from rules.notify.robots import HttpRobot
from rules.settings import RulesSettings
from runtime.health import HealthServer
from runtime.mqtt5.packets import Publish
from runtime.stream import StreamService
from store.alert_copies import INFLUX_CHANNEL, MQTT_CHANNEL, open_grid_lines, open_lines
from store.alerts import AlertStore, AlertView
from store.checkpoints import Checkpoints
from store.estate_settings import RULES_KEY, EstateSettings
from store.influx import Influx, InfluxError
from store.now_series import devices_now_lines
from store.outbox import Item, Outgoing
from store.registry.db import Registry, devices_version

log = logging.getLogger("estatewatch.rules")
# A registry or InfluxDB that fails now and then is waited for; one that keeps failing stops us.
TRANSIENT = (SQLAlchemyError, OSError, InfluxError)
OUTBOX_BATCH = 500
SERIES_BATCH = 5000  # points per write, as ingest batches
# A day and a third of the reference estate's per-building minutes (99 buildings x 2 series x 1,440 a day).
SERIES_PENDING_MAX = 400_000


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter("rules_messages", "messages evaluated", registry=self.registry)
        self.changes = Counter("rules_alert_changes", "alert changes applied", ["action"], registry=self.registry)
        self.connected = Gauge("rules_connected", "1 while connected to the broker", registry=self.registry)
        self.notifications = Counter(
            "rules_notifications", "robot and webhook messages by outcome", ["channel", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.rebuild_s = Gauge("rules_rebuild_seconds", "how long the start-up rebuild took", registry=self.registry)


class RulesService(StreamService):
    def __init__(self, settings: RulesSettings) -> None:
        super().__init__("rules", log, settings.drain_s)
        self.settings = settings
        self.metrics = Metrics()
        self.rebuilt: dict[str, int] = {}
        self._ready = asyncio.Event()
        self._series_pending: list[str] = []
        self._lock = asyncio.Lock()
        self._outbox_wake = asyncio.Event()
        self._settings_version = 0
        self._devices_version = -1

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        s = self.settings
        self.estate = load_estate(s.estate_file)
        self.config = RulesConfig.load(s.rules_config)
        self.engine = Engine(
            self.estate, self.config, wall_ms=lambda: int(time.time() * 1000), expect_from_first_reading=False
        )
        self.directory = Directory(self.estate)
        self.influx = await self.stack.enter_async_context(Influx(s.influx_url, s.influx_database))
        registry = self.registry = await self.stack.enter_async_context(Registry(s.db_url, pooled=True))
        self.store = AlertStore(registry)
        self.estate_settings = EstateSettings(registry)
        await self._apply_settings()  # before the rebuild: history is judged by today's settings
        await self._sync_devices()  # and by today's devices (the registry's, the API's included)
        self.checkpoints = Checkpoints(registry)
        http = await self.stack.enter_async_context(httpx.AsyncClient(timeout=10))
        self.dispatchers = [
            Dispatcher(HttpRobot(ch, http), self.store.outbox, outcomes=self.metrics.notifications)
            for ch in self.config.notify.channels
        ]
        if s.rules_metrics_port:
            self.health = await self.stack.enter_async_context(
                HealthServer(s.rules_metrics_host, s.rules_metrics_port, self.metrics.registry, self.problem)
            )
        await self._connect()  # queued messages wait for the rebuild (see on_message)
        await self._rebuild()
        # The estate and the engine's tables live as long as the process: keep the collector's
        # full passes from walking them again and again (pauses in the message path otherwise).
        gc.freeze()
        self._start_rules_tasks()
        self._ready.set()

    async def drain(self) -> None:
        """Let the messages in flight finish (and be acknowledged), send what the outbox holds, and
        checkpoint: each within the drain deadline (what is left waits for the next start)."""
        await self.handlers_done()
        with contextlib.suppress(*TRANSIENT):
            await self._publish_due()
            await self._write_due()
            await self._write_series()
            if self._ready.is_set():  # a failed last checkpoint costs a longer rebuild, no data
                await self._checkpoint()

    def _start_rules_tasks(self) -> None:
        s = self.settings
        for d in self.dispatchers:
            self.task(f"notify-{d.name}", d.run())
        self.task("mqtt-outbox", self._drain_forever(self._publish_due))
        self.task("influx-outbox", self._drain_forever(self._write_due))
        self.every("checkpoint", s.rules_checkpoint_s, self._checkpoint, retry=TRANSIENT)
        self.every("ack-escalation", s.rules_escalation_check_s, self._escalate, retry=TRANSIENT)
        if s.rules_open_counts_s:
            self.every("now-series", s.rules_open_counts_s, self._now_series, retry=TRANSIENT, give_up_after=None,
                       aligned=True)  # fmt: skip
        self.every("estate-settings", s.rules_settings_poll_s, self._poll_registry, retry=TRANSIENT)
        # The boards' series: InfluxDB away for long costs their points (kept, then the oldest
        # dropped), never the alerts: these two never stop the service.
        self.every("derived-series", s.rules_series_write_s, self._write_series, retry=TRANSIENT, give_up_after=None)

    def problem(self) -> str | None:
        if not self.connected:
            return "not connected to the broker"
        if not self._ready.is_set():
            return "rebuilding state from history"
        return super().problem()

    async def _poll_registry(self) -> None:
        await self._apply_settings()
        await self._sync_devices()

    async def _sync_devices(self) -> None:
        """The registry's devices of this site, when they changed: registered, disabled, deleted."""
        async with self.registry.session() as s:
            version = await devices_version(s)
        if version == self._devices_version:
            return
        self._devices_version = version
        site = self.estate.site.id
        active = [d.as_estate_device() for d in await self.registry.devices(site=site) if d.enabled]
        added, left = self.engine.sync_devices(active)
        if added or left:
            log.info("registry devices applied", extra={"active": len(active), "added": added, "left": left})

    async def _apply_settings(self) -> None:
        """Engineers' run-time changes (API): rules layer and rosters, applied without a restart."""
        site = self.estate.site.id
        version = await self.estate_settings.version(site)
        if version == self._settings_version:
            return
        self._settings_version = version
        layer = await self.estate_settings.get(site, RULES_KEY)
        try:
            config = RulesConfig.load(self.settings.rules_config, runtime=layer.value if layer else None)
        except ConfigError as exc:  # the API validated it; keep running on the last good settings
            log.error("run-time rules settings refused, keeping the previous ones: %s", exc)
            return
        grids = await self.estate_settings.grids(site)
        self.config = config
        self.engine.reconfigure(config, grids)
        if version:
            log.info("run-time settings applied", extra={"version": version, "by": layer.updated_by if layer else ""})

    async def _now_series(self) -> None:
        """The boards' "now" (store/now_series.py): open alerts per rule and grid, and devices
        reporting per type and grid, zeros included (a snapshot: one that cannot be written is
        simply the next one's)."""
        site = self.estate.site.id
        rules = list(type(self.config.rules).model_fields)
        grids = [g.id for g in self.estate.grids]
        now_ns = int(time.time() * 1000) * 1_000_000
        counts = await self.store.open_counts(site)
        lines = open_lines(site, rules, grids, counts, now_ns) + open_grid_lines(site, grids, counts, now_ns)
        lines += devices_now_lines(site, self.engine.device_counts(), now_ns)
        await self.influx.write("\n".join(lines).encode(), precision="ns")

    async def _write_series(self) -> None:
        """The engine's derived points (per building and minute, in event time). Not a snapshot: a
        batch InfluxDB did not take waits for the next run, up to SERIES_PENDING_MAX points."""
        self._series_pending += self.engine.take_series()
        if len(self._series_pending) > SERIES_PENDING_MAX:
            dropped = len(self._series_pending) - SERIES_PENDING_MAX
            log.warning("InfluxDB away too long: %d derived points dropped (the oldest)", dropped)
            self._series_pending = self._series_pending[dropped:]
        while self._series_pending:
            batch = self._series_pending[:SERIES_BATCH]
            await self.influx.write("\n".join(batch).encode(), precision="ns")
            del self._series_pending[: len(batch)]

    # -- rebuild ---------------------------------------------------------------------------------
    async def _rebuild(self) -> None:
        started = time.monotonic()
        site = self.estate.site.id
        checkpoint = await self.checkpoints.get(site, rebuild.PLATES_CHECKPOINT)
        changes, counts = await rebuild.replay_history(
            self.engine,
            self.influx,
            checkpoint,
            history_days=self.config.rules.zombie_car.history_days,
            recent_s=self.settings.rules_rebuild_s,
            now_ms=int(time.time() * 1000),
        )
        applied = 0
        for change in changes:
            applied += await self._apply(change)
        self.engine.adopt([v.as_alert() for v in await self.store.open_alerts(site)])
        # Every device is expected from the first reading of the rebuilt window (or from now, with no
        # history yet): one silent since before the restart, or never heard at all, is reported like
        # one that stopped while the engine ran; a first start does not call the whole estate silent.
        self.engine.expect_all(self.engine.first_ms or int(time.time() * 1000))
        self.rebuilt = {**counts, "changes": len(changes), "new": applied}
        self.metrics.rebuild_s.set(time.monotonic() - started)
        log.info("rebuilt rule state from history", extra={**self.rebuilt, "seconds": time.monotonic() - started})

    async def _checkpoint(self) -> None:
        await self.checkpoints.put(self.estate.site.id, rebuild.PLATES_CHECKPOINT, self.engine.plates_snapshot())

    # -- messages --------------------------------------------------------------------------------
    async def on_message(self, message: Publish) -> int:
        await self._ready.wait()
        changes = self.engine.process(message.topic, message.payload)
        self.metrics.messages.inc()
        if changes:
            async with self._lock:  # changes reach the registry in the order the engine made them
                try:
                    for change in changes:
                        await self._apply(change)
                except (SQLAlchemyError, OSError) as exc:
                    # Unacknowledged, so the broker keeps it; the engine has moved on, so stop (and
                    # exit 1): a restart rebuilds from history and the registry, which stays consistent.
                    self._fail("alert-changes", exc)
                    await self.until_closed()
        return 0

    async def _apply(self, change: AlertChange) -> int:
        applied = await self.store.apply(change.change.value, change.ts, change.alert, self._notifications)
        if applied is None:
            return 0
        self._changed(applied.action)
        return 1

    def _changed(self, action: Action) -> None:
        self.metrics.changes.labels(action.value).inc()
        for d in self.dispatchers:
            d.wake.set()
        self._outbox_wake.set()

    def _notifications(self, alert: AlertView, action: Action) -> list[Item]:
        notify = self.config.notify
        return notifications(alert, action, notify.channels, self.directory, notify.page_url)

    async def _escalate(self) -> None:
        notify = self.config.notify
        roles = notify.ack_escalate_to

        def reach(alert: AlertView, level: int) -> list[str]:
            role = roles[min(level, len(roles)) - 1] if roles else None
            return [f"contact:{role}"] if role else []

        for _ in await self.store.escalate_unacknowledged(notify.ack_timeouts_s, reach, self._notifications):
            self._changed(Action.ESCALATED)

    # -- the outbox's MQTT and InfluxDB channels -------------------------------------------------
    async def _drain_forever(self, send: Any) -> None:
        """Send what is due, when woken (a change, a reconnect) or every second (retries coming due)."""
        failures = 0
        while True:
            self._outbox_wake.clear()  # before looking: what is queued meanwhile wakes the next round
            try:
                await send()
                failures = 0
            except TRANSIENT as exc:  # the rows stay pending: sent when the registry answers again
                failures += 1
                log.warning("alert outbox not drained (%s); trying again", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox_wake.wait(), min(30.0, 1.0 * 2**failures))

    async def _publish_due(self) -> None:
        if not self.connected:
            return  # kept: they go out once the broker is back (a reconnect wakes us)
        due = await self.store.outbox.take(MQTT_CHANNEL, limit=OUTBOX_BATCH)
        try:
            for item in due:
                payload = json.dumps(item.message["payload"], ensure_ascii=False).encode()
                # QoS 1 in a persistent session: the client resends it after a reconnect until the broker acks.
                for topic in item.message.get("topics") or [item.message["topic"]]:
                    await self.publish(topic, payload)
        except Exception:
            # Due again now (for the next round, or the other rules service), not when the claim runs out.
            with contextlib.suppress(*TRANSIENT):
                await self.store.outbox.release([i.id for i in due])
            raise
        if due:
            await self.store.outbox.settle([i.id for i in due], "sent")

    async def _write_due(self) -> None:
        """Alert lines for the boards, in batches; InfluxDB away: they wait in the outbox, in order."""
        due = await self.store.outbox.take(INFLUX_CHANNEL, limit=OUTBOX_BATCH)
        if not due:
            return
        try:
            await self.influx.write("\n".join(i.message["line"] for i in due).encode(), precision="ns")
        except InfluxError as exc:
            if exc.status == 400:  # a line InfluxDB refuses would hold back every line after it
                await self._write_one_by_one(due)
                return
            await self.store.outbox.retry_later([i.id for i in due], 2.0, str(exc))
            raise
        await self.store.outbox.settle([i.id for i in due], "sent")

    async def _write_one_by_one(self, due: list[Outgoing]) -> None:
        """InfluxDB 1.x stores the good lines of a refused batch, 2.x none: write each alone, and
        give up only on the lines refused alone (logged with InfluxDB's reason), not on the rest."""
        for n, item in enumerate(due):
            try:
                await self.influx.write(item.message["line"].encode(), precision="ns")
            except InfluxError as exc:
                if exc.status != 400:
                    # Away again: this and the rest stay pending (tried again soon, not when the claim runs out).
                    await self.store.outbox.retry_later([i.id for i in due[n:]], 2.0, str(exc))
                    raise
                log.error("InfluxDB refuses an alert line for good: %s (%s)", exc.body[:300],
                          item.message["line"][:300])  # fmt: skip
                await self.store.outbox.settle([item.id], "failed", exc.body[:500])
                continue
            await self.store.outbox.settle([item.id], "sent")

    async def _connect(self) -> None:
        s = self.settings
        site = self.estate.site.id
        await self.connect_stream(
            s.mqtt,
            client_id=s.rules_client_id,
            session_expiry_s=s.rules_session_expiry_s,
            receive_maximum=1000,
            share_group=s.rules_share_group,
            filters=[subscription(ch, site) for ch in (Channel.TELEMETRY, Channel.EVENT)] + [noisy_topic(site)],
            connected_gauge=self.metrics.connected,
        )

    def _on_connect(self, session_present: bool) -> None:
        super()._on_connect(session_present)
        self._outbox_wake.set()  # what waited in the outbox while we were away
