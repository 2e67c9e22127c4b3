"""The engine: device messages in (topic, payload), alert changes out, in event time.

The clock is the newest device ``ts`` seen, never the wall clock, so a replay of recorded history
behaves exactly as the live stream did.
"""

from collections.abc import Callable
from typing import Any

from devices.alerts import Alert, AlertChange
from devices.catalog import PayloadError, parse_payload
from devices.estate import Device, Estate, Grid, owning_grid
from devices.notices import NoisyDevice, noisy_topic
from devices.payloads.common import Status
from devices.topics import TopicError, parse_topic
from devices.types import Channel, DeviceType
from rules import access, fire, sos
from rules.chargers import Chargers
from rules.config import RulesConfig
from rules.context import Context, Where
from rules.fire_lane import FireLanes
from rules.flying_lead import FlyingLead
from rules.invalid_payloads import InvalidPayloads
from rules.loads import BuildingMinutes
from rules.silent import Silent
from rules.zombie import ZombieCars

TICK_MS = 1000
LOAD_DELAY_MS = 10_000  # a building's minute is summarised this long after it, for readings in flight
Handler = Callable[[Context, Where, Channel, Any], None]


class Engine:
    def __init__(
        self,
        estate: Estate,
        config: RulesConfig,
        wall_ms: Callable[[], int] | None = None,
        expect_from_first_reading: bool = True,
    ) -> None:
        """``wall_ms``: the live service's clock, to ignore readings from the far future (replay: None).
        ``expect_from_first_reading``: every device is expected to report from the first reading on (a
        replay); the live service calls ``expect_all`` itself, once its rebuild is done."""
        self._wall_ms = wall_ms
        self._future_ms = int(config.future_s * 1000)
        self.estate = estate
        self.ctx = Context(estate, config)
        self.clock_ms = 0
        self.processed = 0
        self.late = 0
        self.ignored: dict[str, int] = {}
        self._zones = {z.id: z for z in estate.zones}
        self._buildings = {b.id: b for b in estate.buildings}
        self._where: dict[tuple[DeviceType, str], Where] = {}
        self._topics: dict[str, tuple[Where, Channel]] = {}
        self._next_tick_ms = 0
        self._lateness_ms = int(config.lateness_s * 1000)
        self._inactive: set[str] = set()  # device ids the registry disabled or deleted (live service)
        self._auto_expect = expect_from_first_reading
        self._expected = False  # expect_all has run: every active device has a silence deadline
        self.first_ms: int | None = None  # the earliest reading fed (history replayed on start included)
        for d in estate.devices:
            self._where[(d.type, d.id)] = self._place(d)
        chargers = Chargers()
        flying = FlyingLead()
        self._zombies = ZombieCars(self.ctx)
        self._lanes = FireLanes(self.ctx, owner_of=self._zombies.owner_unit)
        self._silent = Silent()
        self._minutes = BuildingMinutes(delay_ms=LOAD_DELAY_MS)
        self._invalid = InvalidPayloads()
        self._noisy_topic = noisy_topic(estate.site.id)
        self._handlers: dict[DeviceType, list[Handler]] = {
            DeviceType.SMOKE_SENSOR: [fire.handle, flying.handle, self._minutes.smoke],
            DeviceType.RADIO: [sos.handle],
            DeviceType.EV_CHARGER: [chargers.handle, self._minutes.charger],
            DeviceType.DOOR_CONTROLLER: [access.handle],
            DeviceType.POWER_METER: [flying.handle],
            DeviceType.CAMERA: [flying.handle, self._lanes.handle, self._zombies.handle],
            DeviceType.SPACE_SENSOR: [self._lanes.handle, self._zombies.handle],
            DeviceType.VEHICLE_GATE: [self._zombies.handle],
        }

    def _place(self, d: Device) -> Where:
        zone = self._zones.get(d.zone or "")
        building = d.building or (zone.building if zone else None)
        grid = owning_grid(zone.grid if zone else None,
                           self._buildings[building].grid if building in self._buildings else None)
        return Where(self.estate.site.id, d, grid, building, d.unit, d.zone)

    def sync_devices(self, active: list[Device]) -> tuple[int, int]:
        """The registry's enabled devices (the live service): each is known, placed and expected to
        report; every other device leaves (ignored, not expected). Returns (added, left)."""
        keys = {(d.type, d.id) for d in active}
        added = 0
        for d in active:
            found = self._where.get((d.type, d.id))
            if found is None or _place_of(found.device) != _place_of(d):
                self._where[(d.type, d.id)] = self._place(d)
                self._topics.clear()  # cached Wheres of moved devices
                added += found is None
            newly = found is None or d.id in self._inactive
            if self._expected and newly:  # registered (or enabled) now: expected from now on
                self._silent.expect(self.ctx, self._where[(d.type, d.id)], self.clock_ms)
        inactive = {k[1] for k in self._where if k not in keys}
        for device in inactive - self._inactive:
            self._silent.forget(self.ctx, device, self.clock_ms)
        left = len(inactive - self._inactive)
        self._inactive = inactive
        return added, left

    def take_series(self) -> list[str]:
        """Derived points (charging load and smoke signal per building) since the last call, to write."""
        return self._minutes.take()

    def device_counts(self) -> dict[tuple[str, str | None], tuple[int, int]]:
        """(expected, silent) devices per (device type, grid), as the silent rule sees them now."""
        return self._silent.counts()

    def expect_all(self, since: int) -> None:
        """Every active device is expected to report from ``since``: one never heard goes silent too."""
        self._expected = True
        for where in self._where.values():
            if where.device.id not in self._inactive:
                self._silent.expect(self.ctx, where, since)

    def _ignore(self, reason: str) -> list[AlertChange]:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1
        return []

    def reconfigure(self, config: RulesConfig, grids: list[Grid] | None = None) -> None:
        """Settings changed at run time; lateness and the future guard stay as started."""
        self.ctx.reconfigure(config, grids)

    def process(self, topic: str, raw: bytes) -> list[AlertChange]:
        """Evaluate one MQTT message; returns the alert changes it caused, in order."""
        known = self._topics.get(topic)
        if known is None:
            if topic == self._noisy_topic:
                return self._noisy(raw)
            try:
                t = parse_topic(topic)
            except TopicError as exc:
                return self._ignore(exc.reason)
            if t.site != self.estate.site.id:
                return self._ignore("other_site")
            where = self._where.get((t.device_type, t.device_id))
            if where is None:
                return self._ignore("unknown_device")
            # Only known devices' topics are remembered, so the cache is bounded by the estate.
            known = self._topics[topic] = (where, t.channel)
        where, channel = known
        if self._inactive and where.device.id in self._inactive:
            return self._ignore("device_disabled")
        try:
            parsed = parse_payload(where.device.type, channel, raw)
        except PayloadError as exc:
            return self._ignore(exc.reason)
        if isinstance(parsed, Status):
            return []  # a retained or will status says nothing about the device being heard now
        return self.feed(where, channel, parsed)

    def _noisy(self, raw: bytes) -> list[AlertChange]:
        """Ingest's report of a device past its reject budget (not a reading: the clock stays)."""
        try:
            report = NoisyDevice.model_validate_json(raw)
        except ValueError:
            return self._ignore("bad_notice")
        where = self._where.get((report.device_type, report.device_id))
        if where is None or report.site != self.estate.site.id:
            return self._ignore("unknown_device")
        self._invalid.handle(self.ctx, where, report)
        changes, self.ctx.changes = self.ctx.changes, []
        return changes

    def where(self, device_type: DeviceType, device_id: str) -> Where | None:
        return self._where.get((device_type, device_id))

    def feed(self, where: Where, channel: Channel, readings: list[Any]) -> list[AlertChange]:
        """Evaluate parsed readings of one device; the alert changes they caused, in order."""
        late_before = self.clock_ms - self._lateness_ms
        handlers = self._handlers.get(where.device.type, ())
        ctx, seen = self.ctx, self._silent.seen
        ahead_limit = self._wall_ms() + self._future_ms if self._wall_ms is not None else None
        if not self._expected:  # until every device is expected: the earliest reading, for expect_all
            first = min(r.ts for r in readings)
            self.first_ms = first if self.first_ms is None else min(self.first_ms, first)
        if self._auto_expect and not self._expected:
            assert self.first_ms is not None
            wall = None if ahead_limit is None else ahead_limit - self._future_ms
            self.expect_all(self.first_ms if wall is None else min(self.first_ms, wall))
        for reading in readings if len(readings) == 1 else sorted(readings, key=lambda r: r.ts):
            ts = reading.ts
            if ahead_limit is not None and ts > ahead_limit:
                self._ignore("future")
                self.processed -= 1  # counted below with the batch
                continue
            if ts < late_before:
                self.late += 1
            elif ts > self.clock_ms:
                self.clock_ms = ts
            seen(ctx, where, ts)
            for handle in handlers:
                handle(ctx, where, channel, reading)
        self.processed += len(readings)
        if self.clock_ms >= self._next_tick_ms:
            # Deadlines are seconds to days apart: judging them once per second of event time is as
            # good as after every message, and much cheaper.
            self._next_tick_ms = self.clock_ms + TICK_MS
            self._tick()
        changes, self.ctx.changes = self.ctx.changes, []
        return changes

    def _tick(self) -> None:
        self._lanes.tick(self.ctx, self.clock_ms)
        self._zombies.tick(self.ctx, self.clock_ms)
        self._silent.tick(self.ctx, self.clock_ms)
        self._invalid.tick(self.ctx, self.clock_ms)
        self._minutes.tick(self.ctx, self.clock_ms)

    def feed_plates(self, where: Where, channel: Channel, reading: Any) -> list[AlertChange]:
        """Weeks of plate history on start: only the zombie-car rule sees it (the rest would raise
        alerts about the past: a bay's month-old reading is no reason to call it silent now)."""
        self.clock_ms = max(self.clock_ms, reading.ts)
        self._zombies.handle(self.ctx, where, channel, reading)
        self._zombies.tick(self.ctx, self.clock_ms)
        changes, self.ctx.changes = self.ctx.changes, []
        return changes

    def adopt(self, alerts: list[Alert]) -> None:
        """Alerts the registry holds open that a rebuild did not reopen: the rules own them again."""
        for alert in alerts:
            if alert.key in self.ctx.alerts:
                continue
            self.ctx.alerts[alert.key] = alert
            if alert.rule == "fire_lane":
                self._lanes.adopt(alert)
            elif alert.rule == "device_silent":
                self._silent.adopt(alert)
            elif alert.rule == "zombie_car":
                self._zombies.adopt(alert)
            elif alert.rule == "invalid_payloads":
                where = next((w for w in self._where.values() if w.device.id == alert.subject), None)
                if where is not None:
                    self._invalid.adopt(self.ctx, where, alert.last_ts)

    def plates_snapshot(self) -> dict[str, Any]:
        return {"clock_ms": self.clock_ms, **self._zombies.snapshot()}

    def restore_plates(self, doc: dict[str, Any]) -> int:
        # The clock is not restored: the replay that follows moves it, and rules judge by it.
        return self._zombies.restore(self.ctx, doc, self.where)

    def hold_bays(self, since: dict[str, int]) -> None:
        """Bays occupied without a break since the given times (from history, on start)."""
        self._zombies.bay_since.update(since)


def _place_of(d: Device) -> tuple[object, ...]:
    """What placing a device and judging its silence depend on (not its vendor or label)."""
    return (d.building, d.unit, d.zone, d.floor, d.reporting_interval_s)
