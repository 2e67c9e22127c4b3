"""Answers kept until the data under them changes: the alert lists, dropped when an alert they could
contain changes (the broker tells the API of each change, from the rules service and from people),
with a time limit in case a change notice is lost while the broker connection is down."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, cast


class ChangeCache:
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.generation = 0
        self._entries: dict[Hashable, tuple[float, bytes]] = {}
        self._pending: dict[Hashable, asyncio.Future[bytes]] = {}

    def get(self, key: Hashable) -> bytes | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: Hashable, body: bytes, generation: int) -> None:
        """Keep ``body`` only if nothing changed since ``generation`` was read (before computing it)."""
        if generation != self.generation or not self.ttl_s:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl_s, body)

    async def get_or_compute(self, key: Hashable, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        """The kept answer, or one computation shared by every request that asks meanwhile: after a
        change, a burst of identical requests must not each query the registry."""
        hit = self.get(key)
        if hit is not None:
            return hit
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        generation = self.generation
        try:
            body = await compute()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it; none waiting is fine too
            raise
        finally:
            self._pending.pop(key, None)
        fut.set_result(body)
        self.put(key, body, generation)
        return body

    def changed(self, affects: Callable[[Hashable], bool] | None = None) -> None:
        """Drop the answers ``affects`` says a change touches (all of them without it)."""
        self.generation += 1
        if affects is None:
            self._entries.clear()
            return
        for key in [k for k in self._entries if affects(k)]:
            del self._entries[key]


def list_affected_by(doc: dict[str, Any] | None) -> Callable[[Hashable], bool] | None:
    """Which cached alert lists one alert's change can touch; a list's key is (site, states, rule,
    severity, grids, building, since, until, limit, offset). The alert's state, severity and time
    may just have changed (a notice carries only the new ones), so those filters count as matching.
    None (a notice may have been missed): every list."""
    if doc is None:
        return None

    def affects(key: Hashable) -> bool:
        k = cast(tuple[Any, ...], key)
        site, rule, grids, building = k[0], k[2], k[4], k[5]
        return (
            site in (None, doc.get("site"))
            and rule in (None, doc.get("rule"))
            and (grids is None or doc.get("grid") in grids)
            and building in (None, doc.get("building"))
        )

    return affects
