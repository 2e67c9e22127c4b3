"""The outbox: every copy of an alert change (the MQTT copy radios and apps read, the InfluxDB line
the boards read, each robot's message, commands to radios and speakers) as a row written in the
same transaction as the change itself, whoever made it (the rules engine or a person through the
API). One publisher per channel drains it (the rules service), so a broker or InfluxDB that is away
when an alert changes delays its copies; it never loses them.

A row's key makes it unique: a replayed change (a restart's rebuild) queues nothing twice. A sender
claims the rows it is about to send (one conditional UPDATE: of two rules services looking at the
same rows, one wins each); a claim is a lease, so the rows of a sender that died are sent again
when it runs out, never lost.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from store.registry.db import Registry
from store.registry.schema import NotificationRow

# (key, channel, alert id, message)
Item = tuple[str, str, int, dict[str, Any]]
# Longer than any send takes (a robot's HTTP timeout, an InfluxDB write): a claim that runs out
# while its sender still works would let another send the row too.
CLAIM_LEASE_S = 60.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    id: int
    key: str
    channel: str
    alert_id: int
    message: dict[str, Any]
    attempts: int


class Outbox:
    def __init__(self, registry: Registry, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self._clock = clock

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def add(self, s: AsyncSession, items: Sequence[Item]) -> int:
        """Queue items in the caller's transaction; a key queued before is skipped (by the database:
        two writers racing on one key cannot both queue it, nor fail the transaction for it)."""
        if not items:
            return 0
        now = self.now_ms()
        rows = [
            {"key": key, "channel": channel, "alert_id": alert_id, "message": message, "state": "pending",
             "attempts": 0, "next_at_ms": now, "created_at_ms": now}
            for key, channel, alert_id, message in {i[0]: i for i in items}.values()
        ]  # fmt: skip
        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(NotificationRow).values(rows).on_conflict_do_nothing(index_elements=["key"])
        result = await s.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    async def enqueue_many(self, items: Sequence[Item]) -> int:
        """Queue items in a transaction of their own; returns how many were new."""
        async with self.registry.transaction() as s:
            return await self.add(s, items)

    async def due(self, channel: str, limit: int = 100) -> list[Outgoing]:
        async with self.registry.session() as s:
            rows = (
                await s.scalars(
                    select(NotificationRow)
                    .where(
                        NotificationRow.channel == channel,
                        NotificationRow.state == "pending",
                        NotificationRow.next_at_ms <= self.now_ms(),
                    )
                    .order_by(NotificationRow.id)
                    .limit(limit)
                )
            ).all()
            return [Outgoing(r.id, r.key, r.channel, r.alert_id, dict(r.message), r.attempts) for r in rows]

    async def claim(self, items: Sequence[Outgoing], lease_s: float = CLAIM_LEASE_S) -> list[Outgoing]:
        """The items this caller may send: those still pending and due (no other sender claimed
        them meanwhile), now hidden from others for ``lease_s``."""
        if not items:
            return []
        now = self.now_ms()
        async with self.registry.transaction() as s:
            won = await s.scalars(
                update(NotificationRow)
                .where(NotificationRow.id.in_([i.id for i in items]), NotificationRow.state == "pending",
                       NotificationRow.next_at_ms <= now)
                .values(next_at_ms=now + int(lease_s * 1000))
                .returning(NotificationRow.id)
            )  # fmt: skip
            ids = set(won.all())
        return [i for i in items if i.id in ids]

    async def release(self, ids: Sequence[int]) -> None:
        """Claimed rows not sent after all (the sender failed): due again at once, for anyone."""
        async with self.registry.transaction() as s:
            await s.execute(
                update(NotificationRow)
                .where(NotificationRow.id.in_(ids), NotificationRow.state == "pending")
                .values(next_at_ms=self.now_ms())
            )

    async def take(self, channel: str, limit: int = 100, lease_s: float = CLAIM_LEASE_S) -> list[Outgoing]:
        """Due items of the channel, claimed (``due`` then ``claim``)."""
        return await self.claim(await self.due(channel, limit), lease_s)

    async def settle(self, ids: Sequence[int], state: str, error: str | None = None) -> None:
        """Mark messages ``sent``, ``folded`` (into a summary that was sent) or ``failed`` for good."""
        async with self.registry.transaction() as s:
            await s.execute(
                update(NotificationRow)
                .where(NotificationRow.id.in_(ids))
                .values(state=state, sent_at_ms=self.now_ms(), error=error and error[:500])
            )

    async def retry_later(self, ids: Sequence[int], delay_s: float, error: str) -> None:
        async with self.registry.transaction() as s:
            await s.execute(
                update(NotificationRow)
                .where(NotificationRow.id.in_(ids))
                .values(
                    attempts=NotificationRow.attempts + 1,
                    next_at_ms=self.now_ms() + int(delay_s * 1000),
                    error=error[:500],
                )
            )

    async def listing(self, channel: str | None = None) -> list[tuple[str, str, int]]:
        """(key, state, attempts) of every queued message, oldest first: for tests and operators."""
        async with self.registry.session() as s:
            query = select(NotificationRow).order_by(NotificationRow.id)
            if channel is not None:
                query = query.where(NotificationRow.channel == channel)
            return [(r.key, r.state, r.attempts) for r in (await s.scalars(query)).all()]
