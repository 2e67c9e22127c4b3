"""The simulator's traffic without a broker or a clock: what ``simulate --record`` would write
(``{"topic", "payload"}`` lines, the rules replay format), played in event time at once."""

import random
from collections.abc import Iterator, Sequence
from typing import Any

from devices.estate import Device, Estate
from devices.topics import device_topic
from sim.behaviour import Fleet
from sim.behaviours import behaviour_for
from sim.incidents import Incident, inject
from sim.schedule import Schedule


def play(
    estate: Estate,
    devices: Sequence[Device],
    *,
    seed: int,
    start_ms: int,
    duration_ms: int,
    incidents: Sequence[Incident] = (),
    incident_after_ms: int = 0,
    rate_scale: float = 1.0,
) -> Iterator[dict[str, Any]]:
    """Every message the devices send from ``start_ms`` for ``duration_ms``, in order, seq-numbered
    per device as the live simulator numbers them; ``incidents`` are injected ``incident_after_ms``
    in, with the live simulator's seeded choices."""
    fleet = Fleet.for_estate(seed)
    behaviours = [behaviour_for(d, estate, seed, fleet) for d in devices]
    schedule = Schedule(behaviours, lambda: rate_scale)
    schedule.start(start_ms)
    seqs = [0] * len(behaviours)
    by_id = {b.device.id: i for i, b in enumerate(behaviours)}
    pending = list(incidents)
    end_ms, inject_at = start_ms + duration_ms, start_ms + incident_after_ms

    def messages(index: int, batch: dict[Any, list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        b = behaviours[index]
        if b.silent:
            return
        for channel, objs in batch.items():
            for obj in objs:
                seqs[index] += 1
                obj["seq"] = seqs[index]
            yield {"topic": device_topic(estate.site.id, b.device.type, b.device.id, channel),
                   "payload": objs[0] if len(objs) == 1 else objs}  # fmt: skip

    while (due := schedule.next_ms()) is not None and due <= end_ms:
        if pending and due >= inject_at:
            rng = random.Random(f"incidents:{seed}")
            for incident in pending:
                result = inject(incident, {b.device.id: b for b in behaviours}, estate, inject_at, rng)
                for device_id, emission in result.emissions:
                    yield from messages(by_id[device_id], schedule.split(by_id[device_id], inject_at, [emission]))
                for device_id in result.tick_now:
                    schedule.tick_now(by_id[device_id], inject_at)
            pending = []
            continue
        entry = schedule.pop_due(due)
        if entry is not None:
            yield from messages(entry[1], entry[2])
