"""The estate: sites, buildings, units, zones, grids and their workers; engineers change rosters
and the run-time rules settings (plate whitelist, fire-lane permits, rule overrides), which the
rules service applies without a restart."""

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select

from api.deps import Caller, StaffCaller, State
from api.errors import ApiError
from api.models import ERRORS
from api.state import ApiState
from devices.estate import Grid, Shift
from devices.ids import Id
from store.estate_settings import RULES_KEY
from store.registry.schema import BuildingRow, SiteRow, UnitRow, ZoneRow
from store.tokens import Principal, Role

router = APIRouter(prefix="/sites", tags=["estate"], responses=ERRORS)
Plate = Annotated[str, StringConstraints(min_length=5, max_length=12, pattern=r"^[^\s;'\"\\]+$")]


class SiteOut(BaseModel):
    id: str
    name: str
    timezone: str
    lat: float
    lon: float


class BuildingOut(BaseModel):
    id: str
    name: str
    grid: str
    floors: int
    lat: float
    lon: float
    units: list[str]


class ZoneOut(BaseModel):
    id: str
    name: str
    kind: str
    grid: str
    building: str | None
    capacity: int


class WorkerOut(BaseModel):
    id: str
    name: str
    mobile: str
    radio: str | None


class ShiftOut(BaseModel):
    worker: str
    days: list[str]
    start: str = Field(description="local time, HH:MM:SS")
    end: str = Field(description="local time, HH:MM:SS; before start: the shift runs past midnight")


class GridOut(BaseModel):
    id: str
    name: str
    workers: list[WorkerOut]
    roster: list[ShiftOut]

    @classmethod
    def of(cls, g: Grid) -> "GridOut":
        return cls.model_validate(g.model_dump(mode="json"))


class EstateOut(BaseModel):
    site: SiteOut
    buildings: list[BuildingOut]
    zones: list[ZoneOut]
    grids: list[GridOut] = Field(description="with workers and rosters: grid workers see their own grids only")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RosterIn(_In):
    roster: list[Shift] = Field(max_length=500)


class WhitelistIn(_In):
    plates: list[Plate] = Field(max_length=5000, description="plates never counted as blocking a fire lane")


class PermitIn(_In):
    plate: Plate
    zone: Id | None = None
    start: dt.datetime
    end: dt.datetime


class PermitsIn(_In):
    permits: list[PermitIn] = Field(max_length=5000)


class MatchIn(_In):
    site: Id | None = None
    zone: Id | None = None
    building: Id | None = None
    device: Id | None = None


class OverrideIn(_In):
    match: MatchIn
    rules: dict[Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,64}$")], dict[str, Any]]


class OverridesIn(_In):
    overrides: list[OverrideIn] = Field(max_length=1000)


class RulesSettingsOut(BaseModel):
    plate_whitelist: list[str]
    fire_lane_permits: list[PermitIn]
    overrides: list[OverrideIn]
    updated_ms: int | None
    updated_by: str | None


@router.get("", operation_id="listSites", summary="The sites in the registry")
async def list_sites(state: State, caller: Caller) -> list[SiteOut]:
    async with state.registry.session() as s:
        rows = (await s.scalars(select(SiteRow).order_by(SiteRow.id))).all()
    return [SiteOut(id=r.id, name=r.name, timezone=r.timezone, lat=r.lat, lon=r.lon) for r in rows]


@router.get("/{site}", operation_id="getEstate", summary="Buildings, units, zones and grids of a site")
async def get_estate(site: Id, state: State, caller: Caller) -> EstateOut:
    async with state.registry.session() as s:
        row = await s.get(SiteRow, site)
        if row is None:
            raise ApiError(404, f"no site {site!r}")
        buildings = (
            await s.scalars(select(BuildingRow).where(BuildingRow.site_id == site).order_by(BuildingRow.id))
        ).all()
        units = (await s.scalars(select(UnitRow).where(UnitRow.site_id == site).order_by(UnitRow.id))).all()
        zones = (await s.scalars(select(ZoneRow).where(ZoneRow.site_id == site).order_by(ZoneRow.id))).all()
    by_building: dict[str, list[str]] = {}
    for u in units:
        by_building.setdefault(u.building_id, []).append(u.id)
    grids = await state.estate.grids(site)
    if caller.role is Role.GRID_WORKER:
        grids = [g for g in grids if g.id in caller.grids]
    elif caller.role is Role.VENDOR:
        grids = []  # workers' names and mobiles are not a vendor's business
    return EstateOut(
        site=SiteOut(id=row.id, name=row.name, timezone=row.timezone, lat=row.lat, lon=row.lon),
        buildings=[BuildingOut(id=b.id, name=b.name, grid=b.grid_id, floors=b.floors, lat=b.lat, lon=b.lon,
                               units=by_building.get(b.id, [])) for b in buildings],
        zones=[ZoneOut(id=z.id, name=z.name, kind=z.kind, grid=z.grid_id, building=z.building_id, capacity=z.capacity)
               for z in zones],
        grids=[GridOut.of(g) for g in grids],
    )  # fmt: skip


@router.put("/{site}/grids/{grid}/roster", operation_id="setRoster", summary="Replace a grid's roster")
async def set_roster(site: Id, grid: Id, body: RosterIn, state: State, caller: StaffCaller) -> GridOut:
    try:
        found = await state.estate.set_roster(site, grid, [s.model_dump(mode="json") for s in body.roster],
                                              caller.actor)  # fmt: skip
    except ValueError as exc:  # a shift for someone who is not a worker of the grid
        raise ApiError(422, str(exc), code="bad_roster") from exc
    if found is None:
        raise ApiError(404, f"no grid {grid!r} at {site!r}")
    return GridOut.of(found)


async def _layer(state: ApiState, site: str) -> tuple[dict[str, Any], int | None, str | None]:
    found = await state.estate.get(site, RULES_KEY)
    return (dict(found.value), found.updated_ms, found.updated_by) if found else ({}, None, None)


def _settings_out(layer: dict[str, Any], updated_ms: int | None, updated_by: str | None) -> RulesSettingsOut:
    rules = layer.get("rules", {})
    return RulesSettingsOut(
        plate_whitelist=rules.get("fire_lane", {}).get("exempt_plates", []),
        fire_lane_permits=rules.get("fire_lane", {}).get("permits", []),
        overrides=layer.get("overrides", []),
        updated_ms=updated_ms,
        updated_by=updated_by,
    )


async def _site_exists(state: ApiState, site: str) -> None:
    async with state.registry.session() as s:
        if await s.get(SiteRow, site) is None:
            raise ApiError(404, f"no site {site!r}")


@router.get("/{site}/rules", operation_id="getRulesSettings", summary="The run-time rules settings of a site")
async def get_rules_settings(site: Id, state: State, caller: StaffCaller) -> RulesSettingsOut:
    await _site_exists(state, site)
    return _settings_out(*await _layer(state, site))


async def _update(
    state: ApiState, caller: Principal, site: str, path: tuple[str, ...], value: Any
) -> RulesSettingsOut:
    await _site_exists(state, site)
    layer, _, _ = await _layer(state, site)
    node = layer
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    saved = await state.estate.put(site, RULES_KEY, layer, caller.actor)
    return _settings_out(layer, saved.updated_ms, saved.updated_by)


@router.put("/{site}/rules/plate-whitelist", operation_id="setPlateWhitelist",
            summary="Plates never counted as blocking a fire lane (added to the rules file's)")
async def set_whitelist(site: Id, body: WhitelistIn, state: State, caller: StaffCaller) -> RulesSettingsOut:
    return await _update(state, caller, site, ("rules", "fire_lane", "exempt_plates"), sorted(set(body.plates)))


@router.put("/{site}/rules/fire-lane-permits", operation_id="setFireLanePermits",
            summary="Time-limited fire-lane permits (moving day, maintenance vans)")
async def set_permits(site: Id, body: PermitsIn, state: State, caller: StaffCaller) -> RulesSettingsOut:
    for p in body.permits:
        if p.start >= p.end or p.start.tzinfo is None:
            message = f"permit for {p.plate}: start must be before end, both with a time zone"
            raise ApiError(422, message, code="bad_permit")
    permits = [p.model_dump(mode="json") for p in body.permits]
    return await _update(state, caller, site, ("rules", "fire_lane", "permits"), permits)


@router.put("/{site}/rules/overrides", operation_id="setRuleOverrides",
            summary="Per site, zone, building or device rule settings (added to the rules file's)")
async def set_overrides(site: Id, body: OverridesIn, state: State, caller: StaffCaller) -> RulesSettingsOut:
    return await _update(state, caller, site, ("overrides",), [o.model_dump(mode="json") for o in body.overrides])
