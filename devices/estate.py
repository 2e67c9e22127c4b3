"""The estate file: site, buildings and their units, grids with workers and rosters, zones, devices.

The file is YAML; loading validates every cross-reference so a typo fails at start, with its path.
"""

import datetime as dt
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from devices.catalog import CATALOG
from devices.ids import Id
from devices.payloads.common import Plate
from devices.types import DeviceType


def owning_grid(zone_grid: str | None, building_grid: str | None) -> str | None:
    """The grid that answers for a place, the one rule everywhere (engine, registry, API): a zone's
    grid (a fire lane, a car park between buildings) over its building's."""
    return zone_grid if zone_grid is not None else building_grid


Name = Annotated[str, StringConstraints(min_length=1, max_length=120)]
Mobile = Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{5,20}$")]


class EstateError(ValueError):
    """An estate file that cannot be used; the message names the file and the offending entry."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


def _quoted_time(value: object) -> object:
    if isinstance(value, int):
        # YAML 1.1 reads an unquoted 18:00 as the number 1080.
        raise ValueError("write times in quotes, e.g. '18:00'")
    return value


# A local time of day in a YAML file, which must be quoted.
LocalTime = Annotated[dt.time, BeforeValidator(_quoted_time)]


WEEK = tuple(Weekday)  # Monday first, as datetime.weekday() counts


def in_window(start: dt.time, end: dt.time, now: dt.time) -> bool:
    """``now`` within [start, end); a window whose end is before its start runs past midnight."""
    if start <= end:
        return start <= now < end
    return now >= start or now < end


class Shift(_Model):
    """A worker on duty on these days from ``start`` to ``end`` (``end`` before ``start`` runs past midnight)."""

    worker: Id
    days: list[Weekday] = Field(default_factory=lambda: list(Weekday), min_length=1)
    start: LocalTime
    end: LocalTime

    def covers(self, at: dt.datetime) -> bool:
        day = WEEK[at.weekday()]
        previous = WEEK[(at.weekday() - 1) % 7]
        now = at.time()
        if self.start <= self.end:
            return day in self.days and self.start <= now < self.end
        return (day in self.days and now >= self.start) or (previous in self.days and now < self.end)


class Worker(_Model):
    id: Id
    name: Name
    mobile: Mobile
    radio: Id | None = None


class Grid(_Model):
    """A 网格: a cluster of buildings with the workers responsible for it."""

    id: Id
    name: Name
    workers: list[Worker] = Field(min_length=1)
    roster: list[Shift] = Field(default_factory=list)

    @model_validator(mode="after")
    def _roster_names_workers(self) -> Self:
        known = {w.id for w in self.workers}
        for shift in self.roster:
            if shift.worker not in known:
                raise ValueError(f"roster names worker {shift.worker!r}, not a worker of grid {self.id!r}")
        return self

    def on_duty(self, at: dt.datetime) -> list[Worker]:
        """Workers whose shift covers ``at`` (local time); with no roster, every worker."""
        if not self.roster:
            return list(self.workers)
        ids = {s.worker for s in self.roster if s.covers(at)}
        return [w for w in self.workers if w.id in ids]


class Unit(_Model):
    """A stairwell unit (单元) of a building."""

    id: Id
    households: int = Field(ge=0, le=1000)


class Building(_Model):
    id: Id
    name: Name
    grid: Id
    floors: int = Field(ge=1, le=200)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    units: list[Unit] = Field(min_length=1)


class ZoneKind(StrEnum):
    PARKING = "parking"
    FIRE_LANE = "fire_lane"


class Zone(_Model):
    id: Id
    name: Name
    kind: ZoneKind
    grid: Id
    building: Id | None = None
    capacity: int = Field(default=1, ge=1, le=100_000)
    underground: bool = False


class Contact(_Model):
    """Escalation targets outside the grids: the property office, security, community police."""

    role: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")]
    name: Name
    mobile: Mobile


class Vehicle(_Model):
    """A resident's registered vehicle (the gates' list): how a plate leads to its owner's unit."""

    plate: Plate
    unit: Id


class Device(_Model):
    id: Id
    type: DeviceType
    building: Id | None = None
    unit: Id | None = None
    floor: int | None = Field(default=None, ge=-10, le=200)
    zone: Id | None = None
    interval_s: int | None = Field(default=None, ge=1, le=86_400)
    vendor: Id | None = None
    label: Name | None = None

    @property
    def reporting_interval_s(self) -> int:
        return self.interval_s or CATALOG[self.type].interval_s


class Site(_Model):
    id: Id
    name: Name
    timezone: str = "Asia/Shanghai"
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Estate(_Model):
    site: Site
    contacts: list[Contact] = Field(default_factory=list)
    grids: list[Grid] = Field(min_length=1)
    buildings: list[Building] = Field(min_length=1)
    zones: list[Zone] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)
    vehicles: list[Vehicle] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        _unique("grid", [g.id for g in self.grids])
        _unique("building", [b.id for b in self.buildings])
        _unique("unit", [u.id for b in self.buildings for u in b.units])
        _unique("zone", [z.id for z in self.zones])
        _unique("device", [d.id for d in self.devices])
        _unique("worker", [w.id for g in self.grids for w in g.workers])
        grids = {g.id for g in self.grids}
        unit_building = {u.id: b.id for b in self.buildings for u in b.units}
        buildings = {b.id for b in self.buildings}
        zones = {z.id for z in self.zones}
        for b in self.buildings:
            if b.grid not in grids:
                raise ValueError(f"building {b.id!r}: unknown grid {b.grid!r}")
        for z in self.zones:
            if z.grid not in grids:
                raise ValueError(f"zone {z.id!r}: unknown grid {z.grid!r}")
            if z.building is not None and z.building not in buildings:
                raise ValueError(f"zone {z.id!r}: unknown building {z.building!r}")
        for d in self.devices:
            if d.building is not None and d.building not in buildings:
                raise ValueError(f"device {d.id!r}: unknown building {d.building!r}")
            if d.unit is not None:
                owner = unit_building.get(d.unit)
                if owner is None:
                    raise ValueError(f"device {d.id!r}: unknown unit {d.unit!r}")
                if d.building is not None and owner != d.building:
                    raise ValueError(f"device {d.id!r}: unit {d.unit!r} is in building {owner!r}, not {d.building!r}")
            if d.zone is not None and d.zone not in zones:
                raise ValueError(f"device {d.id!r}: unknown zone {d.zone!r}")
        _unique("vehicle plate", [v.plate for v in self.vehicles])
        for v in self.vehicles:
            if v.unit not in unit_building:
                raise ValueError(f"vehicle {v.plate!r}: unknown unit {v.unit!r}")
        return self

    def building(self, building_id: str) -> Building:
        for b in self.buildings:
            if b.id == building_id:
                return b
        raise KeyError(building_id)

    def grid_of(self, device: Device) -> str | None:
        zone = next((z.grid for z in self.zones if z.id == device.zone), None) if device.zone else None
        return owning_grid(zone, self.building(device.building).grid if device.building else None)

    def count_by_type(self) -> dict[DeviceType, int]:
        counts = dict.fromkeys(DeviceType, 0)
        for d in self.devices:
            counts[d.type] += 1
        return counts


def _unique(kind: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"duplicate {kind} id {i!r}")
        seen.add(i)


def load_estate(path: Path) -> Estate:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EstateError(f"cannot read estate file {path}: {exc.strerror}") from None
    try:
        data: Any = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise EstateError(f"{path}: not valid YAML: {exc}") from None
    try:
        return Estate.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: not a valid estate file:"]
        for err in exc.errors(include_url=False)[:10]:
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {err['msg']}")
        raise EstateError("\n".join(lines)) from None


def dump_estate(estate: Estate) -> str:
    """YAML with one line per device, so the reference estate stays readable and diffable."""
    data = estate.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    head = {k: v for k, v in data.items() if k != "devices"}
    text = yaml.safe_dump(head, allow_unicode=True, sort_keys=False, width=120)
    rows = [
        yaml.safe_dump(d, allow_unicode=True, sort_keys=False, default_flow_style=True, width=1000).strip()
        for d in data.get("devices", [])
    ]
    return text + "devices:\n" + "".join(f"- {r}\n" for r in rows)
