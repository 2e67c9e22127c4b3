"""What engineers change while the platform runs: grid rosters, and a layer of rules settings (the
plate whitelist, fire-lane permits, rule overrides) over the rules file. The rules service polls
``version`` and applies a change without a restart."""

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from devices.estate import Grid
from store.registry.db import Registry, retrying
from store.registry.schema import EstateSettingRow, GridRow

RULES_KEY = "rules"  # {"rules": {...partial rules...}, "overrides": [...]}
ROSTER_KEY = "rosters"  # a version marker: the rosters live in the grids table


@dataclass(frozen=True, slots=True)
class Setting:
    value: Any
    updated_ms: int
    updated_by: str


class EstateSettings:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def get(self, site: str, key: str) -> Setting | None:
        async with self.registry.session() as s:
            row = await s.get(EstateSettingRow, (site, key))
        return None if row is None else Setting(row.value, row.updated_ms, row.updated_by)

    async def put(self, site: str, key: str, value: Any, actor: str) -> Setting:
        return await retrying(lambda: self._put(site, key, value, actor))

    async def _put(self, site: str, key: str, value: Any, actor: str) -> Setting:
        async with self.registry.transaction() as s:
            now = _stamp(await self._version(s, site))
            row = await s.get(EstateSettingRow, (site, key))
            if row is None:
                s.add(EstateSettingRow(site_id=site, key=key, value=value, updated_ms=now, updated_by=actor))
            else:
                row.value, row.updated_ms, row.updated_by = value, now, actor
        return Setting(value, now, actor)

    async def version(self, site: str) -> int:
        """Grows with every change of the site's settings or rosters (0: never changed)."""
        async with self.registry.session() as s:
            return await self._version(s, site)

    @staticmethod
    async def _version(s: Any, site: str) -> int:
        found = await s.scalar(select(func.max(EstateSettingRow.updated_ms)).where(EstateSettingRow.site_id == site))
        return int(found or 0)

    async def grids(self, site: str) -> list[Grid]:
        async with self.registry.session() as s:
            rows = (await s.scalars(select(GridRow).where(GridRow.site_id == site).order_by(GridRow.id))).all()
        return [
            Grid.model_validate({"id": r.id, "name": r.name, "workers": r.workers, "roster": r.roster}) for r in rows
        ]

    async def set_roster(self, site: str, grid: str, roster: list[dict[str, Any]], actor: str) -> Grid | None:
        """Validated against the grid's workers; None when the grid does not exist."""
        return await retrying(lambda: self._set_roster(site, grid, roster, actor))

    async def _set_roster(self, site: str, grid: str, roster: list[dict[str, Any]], actor: str) -> Grid | None:
        async with self.registry.transaction() as s:
            row = await s.get(GridRow, (site, grid))
            if row is None:
                return None
            checked = Grid.model_validate({"id": row.id, "name": row.name, "workers": row.workers, "roster": roster})
            row.roster = [shift.model_dump(mode="json") for shift in checked.roster]
            now = _stamp(await self._version(s, site))
            marker = await s.get(EstateSettingRow, (site, ROSTER_KEY))
            if marker is None:
                s.add(EstateSettingRow(site_id=site, key=ROSTER_KEY, value={}, updated_ms=now, updated_by=actor))
            else:
                marker.updated_ms, marker.updated_by = now, actor
            return checked


def _stamp(version: int) -> int:
    """Now, but always past the last version, so two changes in one ms are still two versions."""
    return max(int(time.time() * 1000), version + 1)
