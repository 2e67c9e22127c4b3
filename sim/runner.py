"""Run an estate's devices against a broker: one MQTT client per device, one asyncio loop.

gmqtt is the client here: it is asyncio-native (no thread per connection, unlike paho), holds
unacknowledged QoS 1 publishes and replays them after a reconnect, and measured ~119k msg/s where
aiomqtt managed ~7k. 6,160 connections cost the simulator one process (see docs/performance.md).
"""

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import gmqtt
from gmqtt.storage import PersistentStorage

from devices.estate import Device, Estate
from devices.topics import device_topic
from devices.types import Channel
from runtime.mqtt import connect
from runtime.settings import MqttTarget
from sim.behaviour import Behaviour, Fleet
from sim.behaviours import behaviour_for
from sim.incidents import Incident, inject
from sim.schedule import Schedule
from store.dynsec import device_username

log = logging.getLogger("estatewatch.sim")
# Brokers and devices alike: a session survives a 10-minute outage.
SESSION_EXPIRY_S = 600
# Readings a device holds while it cannot publish (about a day of a radio's, at 10 s).
BACKLOG_MAX = 10_000


class SimError(RuntimeError):
    """The simulation cannot start as asked."""


INCIDENT_DELAY_S = 5.0  # real seconds after the start (estate time: times the speed)


@dataclass(frozen=True)
class SimOptions:
    mqtt: MqttTarget
    seed: int = 1
    rate_scale: float = 1.0
    speed: float = 1.0  # simulated seconds per wall-clock second
    duration_s: float | None = None
    start_ms: int | None = None  # simulated clock at start; default: now
    incidents: tuple[Incident, ...] = ()
    incident_delay_s: float = INCIDENT_DELAY_S
    connect_concurrency: int = 200
    connect_timeout_s: float = 120.0
    # Per-device broker passwords by username ({site}.{device id}); without: every device uses mqtt's user.
    device_passwords: dict[str, str] | None = None
    record: Path | None = None  # JSON lines {"topic", "payload"}: the rules replay format
    drain_s: float = 10.0  # at the end, how long outstanding PUBACKs may take before devices leave


@dataclass
class Stats:
    devices: int = 0
    connected: int = 0
    messages: int = 0
    statuses: int = 0
    readings: int = 0
    acked: int = 0
    reconnects: int = 0
    dropped: int = 0  # device backlog overflowed (BACKLOG_MAX)

    def snapshot(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "connected": self.connected,
            "messages": self.messages,
            "statuses": self.statuses,
            "readings": self.readings,
            "acked": self.acked,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
        }


class _AckCounter(PersistentStorage):  # type: ignore[misc]
    """gmqtt's in-flight store, counting PUBACKs so the simulator can say what the broker has."""

    def __init__(self, stats: Stats) -> None:
        super().__init__()
        self._stats = stats
        self.on_ack: Callable[[], None] = lambda: None

    def remove_message_by_mid(self, mid: int) -> None:
        if mid in self._messages:
            self._stats.acked += 1
            self.on_ack()
        super().remove_message_by_mid(mid)


class SimulatedDevice:
    def __init__(self, behaviour: Behaviour, site: str, client: Any, stats: Stats, session_ts: int) -> None:
        self.session_ts = session_ts
        self.behaviour = behaviour
        self.device = behaviour.device
        self.client = client
        self.stats = stats
        self.seq = 0
        self.backlog: deque[tuple[str, bytes, bool]] = deque()
        loop = asyncio.get_running_loop()
        # After the ack is processed, not inside gmqtt's PUBACK handling.
        client._persistent_storage.on_ack = lambda: loop.call_soon(self.drain_backlog) if self.backlog else None
        self.ever_connected = False
        self.topics = {ch: device_topic(site, self.device.type, self.device.id, ch) for ch in Channel}

    def status(self, state: str, ts: int) -> bytes:
        return json.dumps({"state": state, "ts": ts}, separators=(",", ":")).encode()

    def publish(self, channel: Channel, objs: list[dict[str, Any]], recorder: IO[str] | None) -> None:
        for obj in objs:
            self.seq += 1
            obj["seq"] = self.seq
        payload: Any = objs[0] if len(objs) == 1 else objs
        raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        self.send(self.topics[channel], raw.encode())
        self.stats.messages += 1
        self.stats.readings += len(objs)
        if recorder is not None:
            recorder.write(json.dumps({"topic": self.topics[channel], "payload": payload}, ensure_ascii=False) + "\n")

    def send(self, topic: str, raw: bytes, retain: bool = False) -> None:
        """Publish at QoS 1, or queue on the device while the broker's receive window is full.

        gmqtt numbers in-flight messages up to the broker's Receive Maximum and raises when out of
        ids (during an outage, say); like a real device, this one keeps a local backlog instead.
        """
        if not self.backlog:
            try:
                self.client.publish(topic, raw, qos=1, retain=retain)
                return
            except OverflowError:
                pass
        if len(self.backlog) >= BACKLOG_MAX:
            self.backlog.popleft()
            self.stats.dropped += 1
        self.backlog.append((topic, raw, retain))

    def drain_backlog(self) -> None:
        while self.backlog:
            topic, raw, retain = self.backlog[0]
            try:
                self.client.publish(topic, raw, qos=1, retain=retain)
            except OverflowError:
                return
            self.backlog.popleft()


class Simulator:
    """``async with Simulator(estate, devices, options) as sim: await sim.run()``."""

    def __init__(self, estate: Estate, devices: Iterable[Device], options: SimOptions) -> None:
        self.estate = estate
        self.options = options
        self.stats = Stats()
        self._wanted = list(devices)
        self._devices: list[SimulatedDevice] = []
        self._schedule = Schedule([])
        self._stop = asyncio.Event()
        self._t0 = 0.0
        self._sim0 = 0
        self._recorder: IO[str] | None = None
        self.injected: list[str] = []

    # -- clock ---------------------------------------------------------------------------------
    def now_ms(self) -> int:
        return self._sim0 + int((time.monotonic() - self._t0) * 1000 * self.options.speed)

    def _wall_delay(self, due_ms: int) -> float:
        return max(0.0, (due_ms - self.now_ms()) / 1000 / self.options.speed)

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        fleet = Fleet.for_estate(self.options.seed)
        self._sim0 = self.options.start_ms or int(time.time() * 1000)
        self._t0 = time.monotonic()
        if self.options.record:
            self._recorder = self.options.record.open("w", encoding="utf-8")
        for device in self._wanted:
            behaviour = behaviour_for(device, self.estate, self.options.seed, fleet)
            # Online and offline (the will) carry the session's start time: the same point in InfluxDB,
            # so whichever the broker delivers last is the device's state.
            session_ts = int(time.time() * 1000)
            client = self._client_for(device, session_ts)
            self._devices.append(SimulatedDevice(behaviour, self.estate.site.id, client, self.stats, session_ts))
        self.stats.devices = len(self._devices)
        self._schedule = Schedule([d.behaviour for d in self._devices], lambda: self.options.rate_scale)
        try:
            await self._connect_all()
        except BaseException:
            await self._disconnect_all(flush_s=0)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._disconnect_all(flush_s=self.options.drain_s)
        if self._recorder is not None:
            self._recorder.close()

    def stop(self) -> None:
        self._stop.set()

    def last_seq(self) -> dict[str, int]:
        """The last ``seq`` each device used (0: nothing sent yet)."""
        return {d.device.id: d.seq for d in self._devices}

    def _client_for(self, device: Device, session_ts: int) -> Any:
        site = self.estate.site.id
        will = gmqtt.Message(
            device_topic(site, device.type, device.id, Channel.STATUS),
            json.dumps({"state": "offline", "ts": session_ts}),
            qos=1,
            retain=True,
        )
        # Clean start off from the first connect: Mosquitto 2.0.11 persists only such sessions, and
        # gmqtt replays unacknowledged publishes only when the broker still has the session.
        client = gmqtt.Client(
            f"{site}.{device.id}",
            clean_session=False,
            will_message=will,
            persistent_storage=_AckCounter(self.stats),
            session_expiry_interval=SESSION_EXPIRY_S,
            logger=logging.getLogger("gmqtt.sim"),
        )
        # gmqtt reconnects by itself; a per-device delay spreads a reconnect storm over seconds.
        rng = random.Random(f"reconnect:{device.id}")
        client.set_config({"reconnect_retries": -1, "reconnect_delay": round(rng.uniform(1.0, 5.0), 2)})
        target = self.options.mqtt
        user, password = target.username, target.password
        if self.options.device_passwords is not None:
            user = device_username(site, device.id)
            password = self.options.device_passwords.get(user)
            if password is None:
                raise SimError(f"no broker password for {user} in the device credentials")
        if user:
            client.set_auth_credentials(user, password)
        return client

    async def _connect_one(self, dev: SimulatedDevice, gate: asyncio.Semaphore) -> None:

        def connected(client: Any, flags: int, rc: int, properties: Any) -> None:
            self.stats.connected += 1
            if dev.ever_connected:
                self.stats.reconnects += 1
            dev.ever_connected = True
            dev.send(dev.topics[Channel.STATUS], dev.status("online", dev.session_ts), retain=True)
            self.stats.statuses += 1
            asyncio.get_running_loop().call_soon(dev.drain_backlog)

        def disconnected(client: Any, packet: Any, exc: Any = None) -> None:
            self.stats.connected = max(0, self.stats.connected - 1)

        dev.client.on_connect = connected
        dev.client.on_disconnect = disconnected
        async with gate:
            await connect(dev.client, self.options.mqtt, give_up_after_s=self.options.connect_timeout_s)

    async def _connect_all(self) -> None:
        gate = asyncio.Semaphore(self.options.connect_concurrency)
        try:
            async with asyncio.TaskGroup() as tg:
                for dev in self._devices:
                    tg.create_task(self._connect_one(dev, gate), name=f"connect:{dev.device.id}")
        except* ConnectionError as group:
            raise group.exceptions[0] from None  # one clear reason, not 6,160 copies of it

    async def flush(self, within_s: float) -> None:
        """Wait (at most ``within_s``) until the broker has acknowledged every publish."""
        live = [d for d in self._devices if d.ever_connected]
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and any(  # noqa: ASYNC110 - polling beats one event per client
            d.backlog or not d.client._persistent_storage.is_empty for d in live
        ):
            await asyncio.sleep(0.05)

    async def _disconnect_all(self, flush_s: float) -> None:
        """Wait (bounded) for outstanding PUBACKs, then leave with the will: devices go offline."""
        live = [d for d in self._devices if d.ever_connected]
        if flush_s > 0:
            await self.flush(flush_s)
        # Reason code 0x04 ("disconnect with will message") publishes each device's retained offline.
        results = await asyncio.gather(*(d.client.disconnect(reason_code=4) for d in live), return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                log.debug("disconnect: %s", r)

    # -- scheduling (sim/schedule.py: the same heap the load test's devices run on) ------------
    def _publish(self, index: int, batch: dict[Channel, list[dict[str, Any]]]) -> None:
        dev = self._devices[index]
        if dev.behaviour.silent:
            return
        for channel, objs in batch.items():
            dev.publish(channel, objs, self._recorder)

    def _inject_incidents(self) -> None:
        by_id = {d.device.id: i for i, d in enumerate(self._devices)}
        behaviours = {d.device.id: d.behaviour for d in self._devices}
        rng = random.Random(f"incidents:{self.options.seed}")
        now = self.now_ms()
        for incident in self.options.incidents:
            result = inject(incident, behaviours, self.estate, now, rng)
            for device_id, emission in result.emissions:
                self._publish(by_id[device_id], self._schedule.split(by_id[device_id], now, [emission]))
            for device_id in result.tick_now:
                self._schedule.tick_now(by_id[device_id], now)
            self.injected.append(result.description)
            log.warning("incident injected: %s", result.description)

    async def run(self) -> Stats:
        """Publish until the duration is over or ``stop()`` is called."""
        self._schedule.start(self.now_ms())
        end = None if self.options.duration_s is None else time.monotonic() + self.options.duration_s
        incidents_at = time.monotonic() + self.options.incident_delay_s if self.options.incidents else None
        while not self._stop.is_set():
            if end is not None and time.monotonic() >= end:
                break
            if incidents_at is not None and time.monotonic() >= incidents_at:
                incidents_at = None
                self._inject_incidents()
            next_ms = self._schedule.next_ms()
            wait = self._wall_delay(next_ms) if next_ms is not None else 1.0
            if end is not None:
                wait = min(wait, max(0.0, end - time.monotonic()))
            if incidents_at is not None:
                wait = min(wait, max(0.0, incidents_at - time.monotonic()))
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), min(wait, 1.0))
                continue
            entry = self._schedule.pop_due(self.now_ms())
            if entry is not None:
                self._publish(entry[1], entry[2])
            # Let the connections write between bursts.
            await asyncio.sleep(0)
        return self.stats
