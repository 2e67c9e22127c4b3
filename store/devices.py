"""Devices registered and changed at run time (through the API), next to the estate file's."""

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from devices.types import DeviceType
from store.registry.db import Registry
from store.registry.schema import BuildingRow, DeviceCredentialRow, DeviceRow, SiteRow, UnitRow, ZoneRow


class DeviceConflictError(ValueError):
    pass


class DevicePlaceError(ValueError):
    """The site, building, unit or zone named does not exist."""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    site: str
    id: str
    type: DeviceType
    building: str | None
    unit: str | None
    floor: int | None
    zone: str | None
    grid: str | None
    interval_s: int
    vendor: str | None
    label: str | None
    enabled: bool
    username: str | None  # its broker client, when it has per-device credentials


class DeviceAdmin:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def get(self, site: str, device_id: str) -> DeviceRecord | None:
        found = await self.list(site=site, ids=[device_id])
        return found[0] if found else None

    async def list(
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
        async with self.registry.session() as s:
            q = select(DeviceRow, DeviceCredentialRow.username).outerjoin(
                DeviceCredentialRow,
                (DeviceCredentialRow.site_id == DeviceRow.site_id) & (DeviceCredentialRow.device_id == DeviceRow.id),
            )
            if site is not None:
                q = q.where(DeviceRow.site_id == site)
            if ids is not None:
                q = q.where(DeviceRow.id.in_(ids))
            if device_type is not None:
                q = q.where(DeviceRow.type == device_type.value)
            if vendor is not None:
                q = q.where(DeviceRow.vendor == vendor)
            if building is not None:
                q = q.where(DeviceRow.building_id == building)
            rows = (await s.execute(q.order_by(DeviceRow.site_id, DeviceRow.id))).all()
            building_grid = {(b.site_id, b.id): b.grid_id for b in (await s.scalars(select(BuildingRow))).all()}
            zone_grid = {(z.site_id, z.id): z.grid_id for z in (await s.scalars(select(ZoneRow))).all()}
        out = []
        for r, username in rows:
            grid = zone_grid.get((r.site_id, r.zone_id or "")) or building_grid.get((r.site_id, r.building_id or ""))
            if grids is not None and grid not in grids:
                continue
            out.append(
                DeviceRecord(
                    r.site_id, r.id, DeviceType(r.type), r.building_id, r.unit_id, r.floor, r.zone_id, grid,
                    r.interval_s, r.vendor, r.label, r.enabled, username,
                )
            )
        return out[offset : offset + limit if limit is not None else None]

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
        async with self.registry.session() as s, s.begin():
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
                    site_id=site, id=device_id, type=device_type.value, building_id=building, unit_id=unit,
                    floor=floor, zone_id=zone, interval_s=interval_s, vendor=vendor, label=label, enabled=True,
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
        async with self.registry.session() as s, s.begin():
            row = await s.get(DeviceCredentialRow, (site, device_id))
            if row is None:
                s.add(DeviceCredentialRow(site_id=site, device_id=device_id, username=username, created_ms=_now_ms()))
            elif rotated:
                row.rotated_ms = _now_ms()

    async def record_usernames(self, site: str, usernames: dict[str, str]) -> int:
        """Broker usernames of devices whose clients were made outside the API (the local stack's
        first dynsec file); those already recorded are left alone. Returns how many were new."""
        async with self.registry.session() as s, s.begin():
            query = select(DeviceCredentialRow.device_id).where(DeviceCredentialRow.site_id == site)
            known = set((await s.scalars(query)).all())
            new = [(d, u) for d, u in usernames.items() if d not in known]
            s.add_all(
                DeviceCredentialRow(site_id=site, device_id=d, username=u, created_ms=_now_ms()) for d, u in new
            )
        return len(new)

    async def set_enabled(self, site: str, device_id: str, enabled: bool) -> None:
        async with self.registry.session() as s, s.begin():
            row = await s.get(DeviceRow, (site, device_id))
            if row is not None:
                row.enabled = enabled

    async def delete(self, site: str, device_id: str) -> None:
        async with self.registry.session() as s, s.begin():
            for table in (DeviceCredentialRow,):
                row = await s.get(table, (site, device_id))
                if row is not None:
                    await s.delete(row)
            device = await s.get(DeviceRow, (site, device_id))
            if device is not None:
                await s.delete(device)


def _now_ms() -> int:
    return int(time.time() * 1000)
