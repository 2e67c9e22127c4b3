"""The registry as an async context manager: ``async with Registry(url) as reg: ...``."""

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection, delete, event, func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from devices.estate import Device, Estate, owning_grid
from devices.types import DeviceType
from store.registry.schema import Base, BuildingRow, DeviceRow, EstateSettingRow, GridRow, SiteRow, UnitRow, ZoneRow

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


def _sqlite_dir(url: str) -> None:
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and url[len(prefix) :] not in ("", ":memory:"):
        Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL: readers never wait for the writer, and a commit appends instead of rewriting pages;
    # NORMAL syncs at checkpoints, not every commit (consistent after a crash, the last commits may
    # be lost on power failure). A busy timeout turns writer contention into a short wait.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _add_new_columns(conn: Connection) -> None:
    """Columns the models gained since a registry was made, added where they are missing. Only
    nullable ones, so existing rows keep their meaning (a token without ``expires_ms`` never
    expires); anything more than an added column needs a real migration."""
    present = inspect(conn)
    for table in Base.metadata.sorted_tables:
        if not present.has_table(table.name):
            continue
        have = {c["name"] for c in present.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise RuntimeError(f"the registry's {table.name} lacks {column.name}, which cannot be added as it is")
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))


class Registry:
    def __init__(self, url: str, *, pooled: bool = False) -> None:
        """``pooled``: keep one SQLite connection open (a busy service); by default each session opens
        its own, so no aiosqlite thread idles (and polls) between a quiet service's rare reads."""
        self.url = url
        self.pooled = pooled
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    async def __aenter__(self) -> Self:
        _sqlite_dir(self.url)
        sqlite = self.url.startswith("sqlite")
        pool: dict[str, Any] = {}
        if sqlite:
            # SQLite has one writer at a time; writers that collide sleep in its busy handler (up to
            # 100 ms a turn, measured as 0.8 s notification stalls). One shared connection makes the
            # service's sessions queue fairly in asyncio instead.
            pool = {"pool_size": 1, "max_overflow": 0} if self.pooled else {"poolclass": NullPool}
        self._engine = create_async_engine(self.url, **pool)
        if sqlite:
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
        async with self._engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.run_sync(_add_new_columns)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    def session(self) -> AsyncSession:
        if self._sessions is None:
            raise RuntimeError("Registry used outside 'async with'")
        return self._sessions()

    async def load_estate(self, estate: Estate) -> LoadReport:
        """Replace the site's structure with the file's and upsert its devices, in one transaction."""
        site = estate.site
        async with self.session() as s, s.begin():
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
