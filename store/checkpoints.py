"""Checkpoints of service state in the registry (one JSON document per site and key)."""

import time
from typing import Any

from store.registry.db import Registry, retrying
from store.registry.schema import RuleStateRow


class Checkpoints:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def get(self, site: str, key: str) -> dict[str, Any] | None:
        async with self.registry.session() as s:
            row = await s.get(RuleStateRow, (site, key))
            return dict(row.value) if row is not None else None

    async def put(self, site: str, key: str, value: dict[str, Any]) -> None:
        """Two services checkpointing a new key at once: the second's insert loses and is retried as
        an update (the last one wins: both hold the same engine state)."""

        async def attempt() -> None:
            async with self.registry.transaction() as s:
                await s.merge(RuleStateRow(site_id=site, key=key, value=value, updated_ms=int(time.time() * 1000)))

        await retrying(attempt)

    async def drop(self, site: str, key: str) -> None:
        async with self.registry.transaction() as s:
            row = await s.get(RuleStateRow, (site, key))
            if row is not None:
                await s.delete(row)
