"""The rules service: ``async with RulesService(settings) as svc: await svc.wait()``.

On start it rebuilds the engine: plate state from its last checkpoint in the registry plus the
InfluxDB history since (or months of history without one), and the last hour of everything else; it
hands every change that rebuild produces to the alert book, which ignores what it already holds: a
restart neither loses an open incident nor raises it twice. Then it
consumes the live stream in its own shared-subscription group, QoS 1 with a persistent session,
acknowledging a message only after its alert changes are in the registry.
"""

import asyncio
import contextlib
import gc
import json
import logging
import time
from typing import Any, Self

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError

from devices.estate import load_estate
from devices.notices import noisy_topic
from devices.topics import alerts_topic, command_topic, subscription
from devices.types import Channel, DeviceType
from rules import rebuild
from rules.alerts import Alert, AlertChange, Severity, State
from rules.config import ConfigError, RulesConfig
from rules.engine import Engine
from rules.notify.dispatch import Dispatcher
from rules.notify.messages import Directory, message, text, wants
from rules.notify.robots import HttpRobot
from rules.settings import RulesSettings
from store.alerts import AlertStore, AlertView, Applied, mirror_line, open_lines
from store.checkpoints import Checkpoints
from store.consumer import StreamConsumer
from store.estate_settings import RULES_KEY, EstateSettings
from store.health import HealthServer
from store.influx import Influx, InfluxError
from store.registry.db import Registry, devices_version

log = logging.getLogger("estatewatch.rules")
MQTT_CHANNEL = "mqtt"
NOTIFY_ACTIONS = ("opened", "reopened", "escalated")


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


class RulesService(StreamConsumer):
    def __init__(self, settings: RulesSettings) -> None:
        super().__init__("rules", log)
        self.settings = settings
        self.metrics = Metrics()
        self.rebuilt: dict[str, int] = {}
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._mqtt_wake = asyncio.Event()
        self._mirror_lines: asyncio.Queue[str] = asyncio.Queue()
        self._settings_version = 0
        self._devices_version = -1

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        s = self.settings
        self._opening()
        try:
            self.estate = load_estate(s.estate_file)
            self.config = RulesConfig.load(s.rules_config)
            self.engine = Engine(
                self.estate, self.config, wall_ms=lambda: int(time.time() * 1000), expect_from_first_reading=False
            )
            self.directory = Directory(self.estate)
            self.influx = await self._stack.enter_async_context(Influx(s.influx_url, s.influx_database))
            registry = self.registry = await self._stack.enter_async_context(Registry(s.db_url, pooled=True))
            self.store = AlertStore(registry)
            self.estate_settings = EstateSettings(registry)
            await self._apply_settings()  # before the rebuild: history is judged by today's settings
            await self._sync_devices()  # and by today's devices (the registry's, the API's included)
            self.checkpoints = Checkpoints(registry)
            http = await self._stack.enter_async_context(httpx.AsyncClient(timeout=10))
            self.dispatchers = [
                Dispatcher(HttpRobot(ch, http), self.store, outcomes=self.metrics.notifications)
                for ch in self.config.notify.channels
            ]
            if s.rules_metrics_port:
                self.health = await self._stack.enter_async_context(
                    HealthServer(s.rules_metrics_host, s.rules_metrics_port, self.metrics.registry, self.problem)
                )
            await self._connect()  # queued messages wait for the rebuild (see _on_message)
            await self._rebuild()
            # The estate and the engine's tables live as long as the process: keep the collector's
            # full passes from walking them again and again (pauses in the message path otherwise).
            gc.freeze()
            self._start_rules_tasks()
            self._ready.set()
        except BaseException:
            await self._close()
            raise
        return self

    async def drain(self) -> None:
        """Stop taking messages; let in-flight ones finish (and be acknowledged) within the deadline."""
        self.accepting = False
        deadline = time.monotonic() + self.settings.rules_drain_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(Exception):  # the outbox's MQTT messages go out before we leave
            await asyncio.wait_for(self._publish_due(), 2)
        if self._ready.is_set():
            with contextlib.suppress(Exception):  # a failed last checkpoint costs a longer rebuild, no data
                await asyncio.wait_for(self._checkpoint(), 5)
        lines = []
        while not self._mirror_lines.empty():
            lines.append(self._mirror_lines.get_nowait())
        if lines:
            with contextlib.suppress(InfluxError, TimeoutError):
                await asyncio.wait_for(self.influx.write("\n".join(lines).encode(), precision="ns"), 5)
        await asyncio.sleep(0.05)

    def _start_rules_tasks(self) -> None:
        jobs = {f"notify-{d.name}": d.run() for d in self.dispatchers}
        jobs["mqtt-outbox"] = self._mqtt_outbox()
        jobs["influx-mirror"] = self._write_mirror()
        jobs["checkpoint"] = self._checkpoint_forever()
        jobs["ack-escalation"] = self._escalate_forever()
        if self.settings.rules_open_counts_s:
            jobs["open-counts"] = self._open_counts_forever()
        jobs["estate-settings"] = self._settings_forever()
        self._start_tasks(jobs)

    def problem(self) -> str | None:
        if not self.connected:
            return "not connected to the broker"
        if not self._ready.is_set():
            return "rebuilding state from history"
        if any(t.done() for t in self._tasks):
            return "a task has stopped"
        return None

    async def _settings_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rules_settings_poll_s)
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

    async def _open_counts_forever(self) -> None:
        period = self.settings.rules_open_counts_s
        site = self.estate.site.id
        rules = list(type(self.config.rules).model_fields)
        grids = [g.id for g in self.estate.grids]
        while True:
            now_ns = int(time.time() * 1000) * 1_000_000
            for line in open_lines(site, rules, grids, await self.store.open_counts(site), now_ns):
                self._mirror_lines.put_nowait(line)
            await asyncio.sleep(period - time.time() % period)

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
        self.engine.adopt([_as_alert(v) for v in await self.store.open_alerts(site)])
        # Every device is expected from the first reading of the rebuilt window (or from now, with no
        # history yet): one silent since before the restart, or never heard at all, is reported like
        # one that stopped while the engine ran; a first start does not call the whole estate silent.
        self.engine.expect_all(self.engine.first_ms or int(time.time() * 1000))
        self.rebuilt = {**counts, "changes": len(changes), "new": applied}
        self.metrics.rebuild_s.set(time.monotonic() - started)
        log.info("rebuilt rule state from history", extra={**self.rebuilt, "seconds": time.monotonic() - started})

    async def _checkpoint_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rules_checkpoint_s)
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        await self.checkpoints.put(self.estate.site.id, rebuild.PLATES_CHECKPOINT, self.engine.plates_snapshot())

    # -- messages --------------------------------------------------------------------------------
    async def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        await self._ready.wait()
        if not self.accepting:
            await self._until_closed()  # never acknowledged: redelivered after the restart
            return 0
        self._inflight += 1
        self._idle.clear()
        try:
            changes = self.engine.process(topic, payload)
            self.metrics.messages.inc()
            if changes:
                async with self._lock:  # changes reach the registry in the order the engine made them
                    try:
                        for change in changes:
                            await self._apply(change)
                    except (SQLAlchemyError, OSError) as exc:
                        # Unacknowledged, so the broker keeps it; the engine has moved on, so stop:
                        # a restart rebuilds from history and the registry, which stays consistent.
                        log.error("the registry refused an alert change (%s); stopping", exc)
                        self.stop()
                        raise
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        return 0

    async def _apply(self, change: AlertChange) -> int:
        applied = await self.store.apply(change.change.value, change.ts, change.snapshot)
        if applied is None:
            return 0
        await self._publish_change(applied)
        return 1

    async def _publish_change(self, applied: Applied) -> None:
        self.metrics.changes.labels(applied.action).inc()
        alert = applied.alert
        await self._mirror(alert, applied.action, applied.notify)

    async def _mirror(self, alert: AlertView, action: str, notify: bool) -> None:
        """Notifications and the MQTT copy (radios, apps) in one outbox transaction; the InfluxDB
        copy (Grafana annotations, history) queued for its writer."""
        doc = {"action": action, **alert.as_json()}
        key = f"{alert.id}:{action}:{alert.count}:{alert.escalation}:{alert.ack_escalations}:{alert.state}:mqtt"
        topic = alerts_topic(alert.site, alert.grid, alert.rule)
        outgoing = self._notifications(alert, action) if notify else []
        outgoing.append((key, MQTT_CHANNEL, alert.id, {"topic": topic, "payload": doc}))
        await self.store.enqueue_many(outgoing)  # one transaction for every recipient and the mirror
        for d in self.dispatchers:
            d.wake.set()
        self._mqtt_wake.set()
        self._mirror_lines.put_nowait(mirror_line(alert, action, alert.last_ts))

    async def _write_mirror(self) -> None:
        """The InfluxDB copy, off the message path: batched, retried, never blocking an alert."""
        while True:
            lines = [await self._mirror_lines.get()]
            while not self._mirror_lines.empty():
                lines.append(self._mirror_lines.get_nowait())
            for attempt in range(5):
                try:
                    await self.influx.write("\n".join(lines).encode(), precision="ns")
                    break
                except InfluxError as exc:  # the registry has them; the copy may wait
                    log.warning("alerts not mirrored to InfluxDB yet (%s)", exc)
                    await asyncio.sleep(min(30.0, 2.0**attempt))

    def _notifications(self, alert: AlertView, action: str) -> list[tuple[str, str, int, dict[str, Any]]]:
        """Outbox items for the robots that want this alert, and commands to radios and speakers."""
        msg = message(alert, action, self.directory, self.config.notify.page_url)
        level = f"{alert.escalation}.{alert.ack_escalations}.{alert.severity}"
        out = [
            (f"{alert.id}:{action}:{level}:{d.name}", d.name, alert.id, msg)
            for d in self.dispatchers
            if wants(d.robot.channel, alert)
        ]
        if action not in NOTIFY_ACTIONS:
            return out
        now = int(time.time() * 1000)
        commands: dict[str, tuple[list[str], dict[str, Any]]] = {}  # one outbox row per kind, not per radio
        for recipient in alert.recipients:
            kind, _, target = recipient.partition(":")
            if kind == "radio":
                topic = command_topic(alert.site, DeviceType.RADIO, target)
                body = {"ts": now, "type": "alert", "alert_id": alert.id, "severity": alert.severity, "text": text(msg)}
            elif kind == "speaker":
                topic = command_topic(alert.site, DeviceType.CAMERA, target)
                body = {"ts": now, "type": "voice_warning", "zone": alert.zone, "text": "消防通道禁止停车，请立即驶离"}
            else:
                continue
            commands.setdefault(kind, ([], body))[0].append(topic)
        for kind, (topics, body) in commands.items():
            item = {"topics": topics, "payload": body}
            out.append((f"{alert.id}:{action}:{level}:{kind}", MQTT_CHANNEL, alert.id, item))
        return out

    async def _escalate_forever(self) -> None:
        notify = self.config.notify
        roles = notify.ack_escalate_to

        def reach(alert: AlertView, level: int) -> list[str]:
            role = roles[min(level, len(roles)) - 1] if roles else None
            return [f"contact:{role}"] if role else []

        while True:
            await asyncio.sleep(self.settings.rules_escalation_check_s)
            for alert in await self.store.escalate_unacknowledged(notify.ack_timeouts_s, reach):
                await self._publish_change(Applied(alert, "escalated", True))

    # -- MQTT ------------------------------------------------------------------------------------
    async def _mqtt_outbox(self) -> None:
        while True:
            self._mqtt_wake.clear()  # before looking: what is queued meanwhile wakes the next round
            await self._publish_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mqtt_wake.wait(), 1.0)

    async def _publish_due(self) -> None:
        if not self.connected:
            return
        due = await self.store.due(MQTT_CHANNEL, limit=500)
        for item in due:
            payload = json.dumps(item.message["payload"], ensure_ascii=False).encode()
            # QoS 1 in a persistent session: gmqtt resends it after a reconnect until the broker acks.
            for topic in item.message.get("topics") or [item.message["topic"]]:
                await self.publish(topic, payload)
        if due:
            await self.store.settle([i.id for i in due], "sent")

    async def _connect(self) -> None:
        s = self.settings
        site = self.estate.site.id
        await self._connect_stream(
            s.mqtt,
            client_id=s.rules_client_id,
            session_expiry_s=s.rules_session_expiry_s,
            receive_maximum=1000,
            share_group=s.rules_share_group,
            filters=[subscription(ch, site) for ch in (Channel.TELEMETRY, Channel.EVENT)] + [noisy_topic(site)],
            connected_gauge=self.metrics.connected,
        )

    def _on_connect(self, client: Any, session_present: int, rc: int, properties: Any) -> None:
        super()._on_connect(client, session_present, rc, properties)
        self._mqtt_wake.set()  # what waited in the outbox while we were away


def _as_alert(v: AlertView) -> Alert:
    return Alert(
        rule=v.rule, subject=v.subject, site=v.site, severity=Severity(v.severity), title=v.title,
        first_ts=v.first_ts, last_ts=v.last_ts, state=State(v.state), count=v.count, escalation=v.escalation,
        grid=v.grid, building=v.building, unit=v.unit, zone=v.zone, recipients=list(v.recipients),
        evidence=list(v.evidence),
    )  # fmt: skip
