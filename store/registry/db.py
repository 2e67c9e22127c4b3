"""The registry as an async context manager: ``async with Registry(url) as reg: ...``."""

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from devices.estate import Device, Estate, owning_grid
from devices.types import DeviceType
from store.registry.engine import WRITE_OPTION, make_engine
from store.registry.migrate import ensure_current, sqlite_lock
from store.registry.schema import BuildingRow, DeviceRow, EstateSettingRow, GridRow, SiteRow, UnitRow, ZoneRow

T = TypeVar("T")

# A version marker in estate_settings, bumped by every change of a site's devices, so readers that
# keep the device list in memory can tell cheaply whether to read it again.
DEVICES_VERSION_KEY = "devices"


async def bump_devices_version(s: AsyncSession, site: str, actor: str) -> None:
    row = await s.get(EstateSettingRow, (site, DEVICES_VERSION_KEY))
    now = int(time.time() * 1000)
    if row is None:
        s.add(EstateSettingRow(site_id=site, key=DEVICES_VERSION_KEY, value={}, updated_ms=now, updated_by=actor))
    else:
        row.updated_ms, row.updated_by = max(now, row.updated_ms + 1), actor


async def devices_version(s: AsyncSession) -> int:
    found = await s.scalar(
        select(func.max(EstateSettingRow.updated_ms)).where(EstateSettingRow.key == DEVICES_VERSION_KEY)
    )
    return int(found or 0)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device as services see it: where it is and who is responsible for it."""

    site: str
    id: str
    type: DeviceType
    building: str | None
    unit: str | None
    floor: int | None
    zone: str | None
    grid: str | None
    interval_s: int
    enabled: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def as_estate_device(self) -> Device:
        """The estate model's device (what the rules place and judge), from the registry's."""
        return Device(id=self.id, type=self.type, building=self.building, unit=self.unit, floor=self.floor,
                      zone=self.zone, interval_s=self.interval_s)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LoadReport:
    site: str
    devices_added: int
    devices_updated: int
    devices_unchanged: int
    devices_kept: int  # in the registry but not in the file (e.g. provisioned through the API)


# A transaction that lost a race is tried again from the start, reading what the winner wrote.
CONFLICT_ATTEMPTS = 8
# PostgreSQL: unique violation (two writers inserted the same key), serialization failure, deadlock.
_PG_CONFLICTS = {"23505", "40001", "40P01"}


def is_conflict(exc: DBAPIError) -> bool:
    """A race another writer won, not a fault: retrying the transaction resolves it. (SQLite's
    write transactions take turns at BEGIN IMMEDIATE; "database is locked" there means the busy
    timeout ran out behind another process's writer.)"""
    code = getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None)
    if code is not None:
        return str(code) in _PG_CONFLICTS
    return "database is locked" in str(exc.orig) or "UNIQUE constraint failed" in str(exc.orig)


async def retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt`` (one whole transaction) again while it loses races, with a short jittered pause."""
    for n in range(CONFLICT_ATTEMPTS):
        try:
            return await attempt()
        except DBAPIError as exc:
            if not is_conflict(exc) or n == CONFLICT_ATTEMPTS - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.005 * 2**n))
    raise AssertionError("unreachable")


class Registry:
    def __init__(self, url: str, *, pooled: bool = False) -> None:
        """``pooled``: see ``make_engine``. Opening checks the schema: an empty database is created at
        the newest version, an older one stops with the command that upgrades it."""
        self.url = url
        self.pooled = pooled
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._writes: async_sessionmaker[AsyncSession] | None = None

    async def __aenter__(self) -> Self:
        self._engine = make_engine(self.url, pooled=self.pooled)
        try:
            async with sqlite_lock(self.url), self._engine.begin() as conn:
                await conn.run_sync(ensure_current, self.url)
        except BaseException:
            await self._engine.dispose()
            raise
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        writing = self._engine.execution_options(**{WRITE_OPTION: True})
        self._writes = async_sessionmaker(writing, expire_on_commit=False)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    def session(self) -> AsyncSession:
        """For reading (one snapshot for all its statements)."""
        if self._sessions is None:
            raise RuntimeError("Registry used outside 'async with'")
        return self._sessions()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction, committed at the end (rolled back on an exception)."""
        if self._writes is None:
            raise RuntimeError("Registry used outside 'async with'")
        async with self._writes() as s, s.begin():
            yield s

    async def load_estate(self, estate: Estate) -> LoadReport:
        """Replace the site's structure with the file's and upsert its devices, in one transaction."""
        site = estate.site
        async with self.transaction() as s:
            for table in (GridRow, BuildingRow, UnitRow, ZoneRow):
                await s.execute(delete(table).where(table.site_id == site.id))
            await s.merge(
                SiteRow(
                    id=site.id,
                    name=site.name,
                    timezone=site.timezone,
                    lat=site.lat,
                    lon=site.lon,
                    contacts=[c.model_dump() for c in estate.contacts],
                )
            )
            s.add_all(
                GridRow(
                    site_id=site.id,
                    id=g.id,
                    name=g.name,
                    workers=[w.model_dump(mode="json") for w in g.workers],
                    roster=[r.model_dump(mode="json") for r in g.roster],
                )
                for g in estate.grids
            )
            s.add_all(
                BuildingRow(
                    site_id=site.id, id=b.id, name=b.name, grid_id=b.grid, floors=b.floors, lat=b.lat, lon=b.lon
                )
                for b in estate.buildings
            )
            s.add_all(
                UnitRow(site_id=site.id, id=u.id, building_id=b.id, households=u.households)
                for b in estate.buildings
                for u in b.units
            )
            s.add_all(
                ZoneRow(
                    site_id=site.id,
                    id=z.id,
                    name=z.name,
                    kind=z.kind.value,
                    grid_id=z.grid,
                    building_id=z.building,
                    capacity=z.capacity,
                    underground=z.underground,
                )
                for z in estate.zones
            )
            existing = {
                row.id: row for row in (await s.scalars(select(DeviceRow).where(DeviceRow.site_id == site.id))).all()
            }
            added = updated = unchanged = 0
            for d in estate.devices:
                values = {
                    "type": d.type.value,
                    "building_id": d.building,
                    "unit_id": d.unit,
                    "floor": d.floor,
                    "zone_id": d.zone,
                    "interval_s": d.reporting_interval_s,
                    "vendor": d.vendor,
                    "label": d.label,
                }
                row = existing.pop(d.id, None)
                if row is None:
                    s.add(DeviceRow(site_id=site.id, id=d.id, enabled=True, **values))
                    added += 1
                elif any(getattr(row, k) != v for k, v in values.items()):
                    for k, v in values.items():
                        setattr(row, k, v)
                    updated += 1
                else:
                    unchanged += 1
            if added or updated:
                await bump_devices_version(s, site.id, "registry init")
        return LoadReport(site.id, added, updated, unchanged, len(existing))

    async def devices(self, *, site: str | None = None, device_type: DeviceType | None = None) -> list[DeviceInfo]:
        async with self.session() as s:
            query = select(DeviceRow).order_by(DeviceRow.site_id, DeviceRow.type, DeviceRow.id)
            if site is not None:
                query = query.where(DeviceRow.site_id == site)
            if device_type is not None:
                query = query.where(DeviceRow.type == device_type.value)
            rows = (await s.scalars(query)).all()
            building_grid = {(b.site_id, b.id): b.grid_id for b in (await s.scalars(select(BuildingRow))).all()}
            zone_grid = {(z.site_id, z.id): z.grid_id for z in (await s.scalars(select(ZoneRow))).all()}
        return [
            DeviceInfo(
                site=r.site_id,
                id=r.id,
                type=DeviceType(r.type),
                building=r.building_id,
                unit=r.unit_id,
                floor=r.floor,
                zone=r.zone_id,
                grid=owning_grid(
                    zone_grid.get((r.site_id, r.zone_id or "")), building_grid.get((r.site_id, r.building_id or ""))
                ),
                interval_s=r.interval_s,
                enabled=r.enabled,
            )
            for r in rows
        ]

    async def device_index(self) -> dict[tuple[str, DeviceType, str], DeviceInfo]:
        """Every device by (site, type, id): what ingest and rules look messages up in."""
        return {(d.site, d.type, d.id): d for d in await self.devices()}
