"""The alert-list cache: one computation for a burst, and a change drops only the lists it can touch."""

import asyncio

from api.cache import ChangeCache, list_affected_by

# (site, states, rule, severity, grids, building, since, until, limit, offset)
G01 = ("small", ("open",), None, None, ("g01",), None, None, None, 50, 0)
G02 = ("small", ("open",), None, None, ("g02",), None, None, None, 50, 0)
ALL = (None, None, None, None, None, None, None, None, 50, 0)
LANES = (None, None, "fire_lane", None, None, None, None, None, 50, 0)


async def test_a_burst_of_misses_computes_once() -> None:
    cache = ChangeCache(ttl_s=30)
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"[]"

    bodies = await asyncio.gather(*(cache.get_or_compute(G01, compute) for _ in range(20)))
    assert bodies == [b"[]"] * 20 and calls == 1
    await cache.get_or_compute(G01, compute)
    assert calls == 1, "kept"


async def test_a_change_drops_the_lists_it_can_touch_only() -> None:
    cache = ChangeCache(ttl_s=30)
    for key in (G01, G02, ALL, LANES):
        cache.put(key, b"x", cache.generation)
    cache.changed(list_affected_by({"site": "small", "rule": "fire", "grid": "g01", "building": "b001"}))
    assert cache.get(G01) is None and cache.get(ALL) is None, "its grid's list and the estate-wide one"
    assert cache.get(G02) == b"x" and cache.get(LANES) == b"x", "another grid's, another rule's"
    cache.changed(list_affected_by(None))
    assert cache.get(G02) is None and cache.get(LANES) is None, "a notice may have been missed: all"


async def test_an_answer_computed_across_a_change_is_not_kept() -> None:
    cache = ChangeCache(ttl_s=30)

    async def compute() -> bytes:
        cache.changed(None)  # a change lands while the registry is being read
        return b"old"

    assert await cache.get_or_compute(G01, compute) == b"old"
    assert cache.get(G01) is None
