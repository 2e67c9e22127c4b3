"""Zombie cars (僵尸车): a plate that came in through a gate and has not moved for weeks.

Movement evidence is a gate read (either way) or a camera sighting in a zone other than where the
car was last seen. 15 days without it puts the plate on a watchlist (info, nobody called); 30 days
asks the grid worker to verify (warning); 90 days is critical. Where the car's zone has a space
sensor on every bay, a warning also needs a bay there occupied for the whole time: if every bay has
been free since, the car cannot still be standing there. Misreads one character away from a known
plate count as that plate; reads without a plate are ignored; declared long absences are honoured.
Deadlines sit in a heap, so thousands of parked cars cost nothing per message.
"""

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devices.alerts import Alert, Severity
from devices.estate import ZoneKind, owning_grid
from devices.types import Channel, DeviceType
from rules.config import ZombieCar
from rules.context import Context, Where
from rules.plates import PlateIndex

RULE = "zombie_car"
DAY_MS = 86_400_000
STAGES = (("watch", Severity.INFO), ("verify", Severity.WARNING), ("critical", Severity.CRITICAL))
LISTED = 10


@dataclass
class Car:
    plate: str
    where: Where  # the device that last placed it
    inside: bool
    last_move: int
    reads: int = 0
    zone: str | None = None
    stage: int = -1


class ZombieCars:
    def __init__(self, ctx: Context) -> None:
        self.cars: dict[str, Car] = {}
        self.index = PlateIndex()
        self.deadlines: list[tuple[int, str]] = []
        self.bay_since: dict[str, int | None] = {}  # space sensor -> occupied since (None: free)
        estate = ctx.estate
        self._zones = {z.id: z for z in estate.zones if z.kind is ZoneKind.PARKING}
        self._bays: dict[str, list[str]] = {}
        for d in estate.devices:
            if d.type is DeviceType.SPACE_SENSOR and d.zone in self._zones:
                self._bays.setdefault(d.zone, []).append(d.id)
        self._owner = {v.plate: v.unit for v in estate.vehicles}
        self._owners = PlateIndex()
        for plate in self._owner:
            self._owners.add(plate)
        self._unit_building = {u.id: b for b in estate.buildings for u in b.units}

    # -- input -----------------------------------------------------------------------------------
    def handle(self, ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
        kind = where.device.type
        if kind is DeviceType.SPACE_SENSOR and where.zone in self._zones:
            occupied = reading.occupied if channel is Channel.TELEMETRY else reading.type == "occupied"
            since = self.bay_since.get(where.device.id)
            if occupied and since is None:
                self.bay_since[where.device.id] = reading.ts
            elif not occupied:
                self.bay_since[where.device.id] = None
            return
        if channel is not Channel.EVENT:
            return
        if kind is DeviceType.VEHICLE_GATE and reading.type == "plate_read":
            if reading.plate is None:
                return  # the camera read no plate: nothing to follow
            car = self._car(ctx, reading.plate, where, reading.ts, inside=reading.direction == "in")
            # Strictly later: the same read again (history replayed over a checkpoint) is no movement.
            if car.reads == 1 or reading.ts > car.last_move:
                car.inside, car.last_move, car.zone, car.where = reading.direction == "in", reading.ts, None, where
                self._moved(ctx, car, reading.ts, {"ts": reading.ts, "gate": where.device.id, "read": reading.plate})
        elif kind is DeviceType.CAMERA and reading.type in ("plate_sighting", "zone_occupied") and reading.plate:
            zone = reading.zone or where.zone
            car = self._car(ctx, reading.plate, where, reading.ts, inside=True)
            if reading.ts < car.last_move:
                return
            if car.zone is None:
                car.zone, car.where = zone, where  # where it parked: placing it is not moving it
            elif zone != car.zone:
                car.zone, car.last_move, car.where = zone, reading.ts, where
                self._moved(ctx, car, reading.ts, {"ts": reading.ts, "camera": where.device.id, "zone": zone})

    def _car(self, ctx: Context, read: str, where: Where, ts: int, inside: bool) -> Car:
        car = self.cars.get(read)
        if car is None:
            near = self.index.near(read)
            if near:
                # A misread: prefer the plate the read makes sense for, then the most-read one.
                car = max((self.cars[p] for p in near), key=lambda c: (c.inside == (not inside), c.reads))
        if car is None:
            car = Car(read, where, inside, ts)
            self.cars[read] = car
            self.index.add(read)
        car.reads += 1
        return car

    def _moved(self, ctx: Context, car: Car, ts: int, evidence: dict[str, Any]) -> None:
        if car.stage >= 0 or ctx.is_open(RULE, car.plate):
            ctx.resolve(RULE, car.plate, ts, {**evidence, "moved": True})
        car.stage = -1
        if car.inside:
            rules = self._rules(ctx, car)
            heapq.heappush(self.deadlines, (ts + int(rules.watch_days * DAY_MS), car.plate))

    def adopt(self, alert: Alert) -> None:
        """An open alert from before a restart: its stage stands, so it is not raised again."""
        car = self.cars.get(alert.subject)
        if car is not None:
            car.stage = max(car.stage, alert.escalation)

    # -- checkpoints ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Weeks of plate state as JSON, so a restart need not replay months of gate reads."""
        return {
            "cars": [
                [c.plate, c.where.device.type.value, c.where.device.id, c.inside, c.last_move, c.reads, c.zone, c.stage]
                for c in self.cars.values()
            ],
            "bays": self.bay_since,
        }

    def restore(self, ctx: Context, doc: dict[str, Any], where_of: Callable[[DeviceType, str], Where | None]) -> int:
        """Cars and bays from a snapshot; their deadlines are scheduled again. Returns the cars restored."""
        for plate, device_type, device_id, inside, last_move, reads, zone, stage in doc.get("cars", []):
            where = where_of(DeviceType(device_type), device_id)
            if where is None:
                continue  # its gate or camera left the estate file
            car = Car(plate, where, inside, last_move, reads, zone, stage)
            self.cars[plate] = car
            self.index.add(plate)
            if inside:
                heapq.heappush(self.deadlines, (last_move + int(self._rules(ctx, car).watch_days * DAY_MS), plate))
        self.bay_since.update(doc.get("bays", {}))
        return len(self.cars)

    # -- time ------------------------------------------------------------------------------------
    def _rules(self, ctx: Context, car: Car) -> ZombieCar:
        return ctx.config.for_device(car.where.site, car.where.device.id, car.zone, None).zombie_car

    def tick(self, ctx: Context, now: int) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            _, plate = heapq.heappop(self.deadlines)
            car = self.cars[plate]
            rules = self._rules(ctx, car)
            if not car.inside or not rules.enabled:
                continue
            thresholds = [
                car.last_move + int(d * DAY_MS) for d in (rules.watch_days, rules.alert_days, rules.critical_days)
            ]
            reached = max((i for i, t in enumerate(thresholds) if t <= now), default=-1)
            if reached > car.stage:
                self._raise(ctx, car, rules, reached, now)
            upcoming = [t for t in thresholds if t > now]
            if upcoming:
                heapq.heappush(self.deadlines, (min(upcoming), plate))

    def _raise(self, ctx: Context, car: Car, rules: ZombieCar, stage: int, now: int) -> None:
        day = ctx.local(now).date()
        absence = next((a for a in rules.absences if a.covers(car.plate, day)), None)
        if absence is not None:
            resume = int(ctx.local(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
            resume += ((absence.end - day).days + 1) * DAY_MS
            heapq.heappush(self.deadlines, (resume, car.plate))
            return
        held = self._held_bays(car)
        if stage >= 1 and held == [] and self._fully_watched(car.zone):
            stage = 0  # every bay of its zone was free at some point: it moved after all
            if car.stage >= 0:
                return
        car.stage = stage
        name, severity = STAGES[stage]
        where = self._where(ctx, car)
        recipients: list[str] = []
        if stage >= 1:
            recipients = ctx.grid_workers(where.grid, now) or ctx.contacts("property_office")
        if stage >= 2:
            recipients += ctx.contacts("property_manager")
        days = (now - car.last_move) / DAY_MS
        evidence = {
            "ts": now,
            "stage": name,
            "plate": car.plate,
            "still_days": round(days, 1),
            "last_move_ts": car.last_move,
            "last_seen_by": car.where.device.id,
            "zone": car.zone,
            "owner_unit": self.owner_unit(car.plate),
            "bays_held_since_then": held[:LISTED],
        }
        title = f"Zombie car {car.plate}: not moved for {int(days)} days"
        if ctx.is_open(RULE, car.plate):
            ctx.note(
                RULE, car.plate, now, evidence, severity=severity, title=title, escalation=stage, recipients=recipients
            )
        else:
            ctx.open(RULE, car.plate, where, severity, title, now, evidence, recipients, escalation=stage)

    def _held_bays(self, car: Car) -> list[str]:
        """Bays (in the car's zone if known) occupied without a break since the car last moved."""
        bays = self._bays.get(car.zone, []) if car.zone else [b for z in self._bays.values() for b in z]
        return sorted(b for b in bays if (s := self.bay_since.get(b)) is not None and s <= car.last_move)

    def _fully_watched(self, zone: str | None) -> bool:
        return zone is not None and zone in self._zones and len(self._bays.get(zone, [])) >= self._zones[zone].capacity

    def _where(self, ctx: Context, car: Car) -> Where:
        unit = self.owner_unit(car.plate)
        building = self._unit_building.get(unit or "")
        zone = self._zones.get(car.zone or "")
        grid = owning_grid(zone.grid if zone else None, building.grid if building else None)
        return Where(car.where.site, car.where.device, grid, building.id if building else None, unit, car.zone)

    def owner_unit(self, plate: str) -> str | None:
        """The registered owner's unit of a plate (or of the known plate a misread stands for)."""
        unit = self._owner.get(plate)
        if unit is None:
            near = self._owners.near(plate)
            unit = self._owner[near[0]] if len(near) == 1 else None
        return unit
