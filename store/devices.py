"""Devices registered and changed at run time (through the API), next to the estate file's."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from devices.estate import owning_grid
from devices.types import DeviceType
from store.registry.db import DeviceInfo, Registry, bump_devices_version, devices_version
from store.registry.schema import BuildingRow, DeviceCredentialRow, DeviceRow, SiteRow, UnitRow, ZoneRow


class DeviceConflictError(ValueError):
    pass


class DevicePlaceError(ValueError):
    """The site, building, unit or zone named does not exist."""


@dataclass(frozen=True, slots=True)
class DeviceRecord(DeviceInfo):
    """A device as its owners manage it: what services see, and who made it and how it connects."""

    vendor: str | None
    label: str | None
    username: str | None  # its broker client, when it has per-device credentials


class DeviceAdmin:
    def __init__(self, registry: Registry, cache_s: float = 0.0) -> None:
        self.registry = registry
        self.cache_s = cache_s
        self._cached: list[DeviceRecord] | None = None
        self._cached_at = 0.0
        self._generation = 0
        self._version = -1
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None

    async def get(self, site: str, device_id: str) -> DeviceRecord | None:
        found = await self.find(site=site, ids=[device_id])
        return found[0] if found else None

    async def find(
        self,
        *,
        site: str | None = None,
        ids: list[str] | None = None,
        device_type: DeviceType | None = None,
        vendor: str | None = None,
        building: str | None = None,
        grids: frozenset[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[DeviceRecord]:
        wanted = set(ids) if ids is not None else None
        out = [
            r
            for r in await self._all()
            if (site is None or r.site == site)
            and (wanted is None or r.id in wanted)
            and (device_type is None or r.type is device_type)
            and (vendor is None or r.vendor == vendor)
            and (building is None or r.building == building)
            and (grids is None or r.grid in grids)
        ]
        return out[offset : offset + limit if limit is not None else None]

    async def _all(self) -> list[DeviceRecord]:
        """Every device, kept for ``cache_s``: an estate's 6,160 rows cost tens of ms to read, which a
        request must not pay. Once stale, the old copy is served while one task reads the new one
        (and only one: a burst of requests must not each read the table). This process's own
        changes drop the copy at once."""
        if not self.cache_s:
            return await self._read()
        fresh = self._cached is not None and time.monotonic() - self._cached_at < self.cache_s
        if fresh and self._cached is not None:
            return self._cached
        if self._cached is not None:  # served as it is while one task checks the version
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self._reload_if_changed(), name="device-cache")
            return self._cached
        async with self._lock:  # nothing to serve yet: the first caller reads, the rest wait for it
            if self._cached is None:
                await self._reload()
            return self._cached if self._cached is not None else await self._read()

    async def _reload_if_changed(self) -> None:
        """Reading 6,160 rows holds the event loop for tens of ms: only when the version moved."""
        started = time.monotonic()
        async with self.registry.session() as s:
            version = await devices_version(s)
        if version == self._version:
            self._cached_at = started
            return
        await self._reload()

    async def _reload(self) -> None:
        generation = self._generation
        started = time.monotonic()
        async with self.registry.session() as s:
            version = await devices_version(s)
        records = await self._read()
        if generation == self._generation:  # no write of ours ran meanwhile: the copy is current
            self._cached, self._cached_at, self._version = records, started, version

    async def _read(self) -> list[DeviceRecord]:
        cred = DeviceCredentialRow
        async with self.registry.session() as s:
            rows = (
                await s.execute(
                    select(
                        DeviceRow.site_id, DeviceRow.id, DeviceRow.type, DeviceRow.building_id, DeviceRow.unit_id,
                        DeviceRow.floor, DeviceRow.zone_id, DeviceRow.interval_s, DeviceRow.vendor, DeviceRow.label,
                        DeviceRow.enabled, cred.username,
                    )
                    .outerjoin(cred, (cred.site_id == DeviceRow.site_id) & (cred.device_id == DeviceRow.id))
                    .order_by(DeviceRow.site_id, DeviceRow.id)
                )
            ).all()  # fmt: skip
            building_grid = {(b, i): g for b, i, g in await s.execute(select(BuildingRow.site_id, BuildingRow.id,
                                                                             BuildingRow.grid_id))}  # fmt: skip
            zone_grid = {(z, i): g for z, i, g in await s.execute(select(ZoneRow.site_id, ZoneRow.id, ZoneRow.grid_id))}
        return [
            DeviceRecord(
                site=site, id=did, type=DeviceType(kind), building=building, unit=unit, floor=floor, zone=zone,
                grid=owning_grid(zone_grid.get((site, zone or "")), building_grid.get((site, building or ""))),
                interval_s=interval, enabled=enabled, vendor=vendor, label=label, username=username,
            )
            for site, did, kind, building, unit, floor, zone, interval, vendor, label, enabled, username in rows
        ]  # fmt: skip

    @contextlib.asynccontextmanager
    async def _write(self, site: str) -> AsyncIterator[AsyncSession]:
        """A write transaction that bumps the devices' version (other processes' copies notice);
        this process's copy is dropped once it is over (committed or not)."""
        try:
            async with self.registry.transaction() as s:
                yield s
                await bump_devices_version(s, site, "api")
        finally:
            self._generation += 1
            self._cached = None

    async def register(
        self,
        site: str,
        device_id: str,
        device_type: DeviceType,
        *,
        building: str | None,
        unit: str | None,
        floor: int | None,
        zone: str | None,
        interval_s: int,
        vendor: str | None,
        label: str | None,
        username: str,
    ) -> DeviceRecord:
        async with self._write(site) as s:
            if await s.get(SiteRow, site) is None:
                raise DevicePlaceError(f"no site {site!r}")
            if building is not None and await s.get(BuildingRow, (site, building)) is None:
                raise DevicePlaceError(f"no building {building!r} at {site!r}")
            if unit is not None:
                row = await s.get(UnitRow, (site, unit))
                if row is None or (building is not None and row.building_id != building):
                    raise DevicePlaceError(f"no unit {unit!r} in building {building!r}")
            if zone is not None and await s.get(ZoneRow, (site, zone)) is None:
                raise DevicePlaceError(f"no zone {zone!r} at {site!r}")
            if await s.get(DeviceRow, (site, device_id)) is not None:
                raise DeviceConflictError(f"device {device_id!r} already exists at {site!r}")
            s.add(
                DeviceRow(
                    site_id=site,
                    id=device_id,
                    type=device_type.value,
                    building_id=building,
                    unit_id=unit,
                    floor=floor,
                    zone_id=zone,
                    interval_s=interval_s,
                    vendor=vendor,
                    label=label,
                    enabled=True,
                )
            )
            s.add(DeviceCredentialRow(site_id=site, device_id=device_id, username=username, created_ms=_now_ms()))
            try:
                await s.flush()
            except IntegrityError as exc:
                raise DeviceConflictError(f"device {device_id!r} or its username already exists") from exc
        found = await self.get(site, device_id)
        assert found is not None
        return found

    async def set_credentials(self, site: str, device_id: str, username: str, *, rotated: bool) -> None:
        async with self._write(site) as s:
            row = await s.get(DeviceCredentialRow, (site, device_id))
            if row is None:
                s.add(DeviceCredentialRow(site_id=site, device_id=device_id, username=username, created_ms=_now_ms()))
            elif rotated:
                row.rotated_ms = _now_ms()

    async def record_usernames(self, site: str, usernames: dict[str, str]) -> int:
        """Broker usernames of devices whose clients were made outside the API (the local stack's
        first dynsec file); those already recorded are left alone. Returns how many were new."""
        async with self._write(site) as s:
            query = select(DeviceCredentialRow.device_id).where(DeviceCredentialRow.site_id == site)
            known = set((await s.scalars(query)).all())
            new = [(d, u) for d, u in usernames.items() if d not in known]
            s.add_all(DeviceCredentialRow(site_id=site, device_id=d, username=u, created_ms=_now_ms()) for d, u in new)
        return len(new)

    async def set_enabled(self, site: str, device_id: str, enabled: bool) -> None:
        async with self._write(site) as s:
            row = await s.get(DeviceRow, (site, device_id))
            if row is not None:
                row.enabled = enabled

    async def delete(self, site: str, device_id: str) -> None:
        async with self._write(site) as s:
            for table in (DeviceCredentialRow,):
                row = await s.get(table, (site, device_id))
                if row is not None:
                    await s.delete(row)
            device = await s.get(DeviceRow, (site, device_id))
            if device is not None:
                await s.delete(device)


def _now_ms() -> int:
    return int(time.time() * 1000)
