"""The engine's state on start: plates from the last checkpoint (or months of InfluxDB without one),
then the last stretch of every device's readings, read window by window so memory stays bounded."""

import logging
from typing import Any

from devices.alerts import AlertChange
from devices.types import Channel, DeviceType
from rules import history
from rules.engine import Engine
from store.influx import Influx, InfluxError

log = logging.getLogger("estatewatch.rules")
DAY_MS = 86_400_000
PLATES_CHECKPOINT = "zombie_car"
PLATES_OVERLAP_MS = 3_600_000  # replayed over the checkpoint: late reads, and reads found twice
RECENT_WINDOW_MS = 600_000
Source = tuple[DeviceType, Channel, tuple[str, ...]]
PLATE_SOURCES: list[Source] = [
    (DeviceType.VEHICLE_GATE, Channel.EVENT, ()),
    (DeviceType.CAMERA, Channel.EVENT, ("plate_sighting", "zone_occupied")),
]
EVERYTHING: list[Source] = [(t, c, ()) for t in DeviceType for c in (Channel.TELEMETRY, Channel.EVENT)]


async def replay_history(
    engine: Engine,
    influx: Influx,
    checkpoint: dict[str, Any] | None,
    *,
    history_days: float,
    recent_s: int,
    now_ms: int,
) -> tuple[list[AlertChange], dict[str, int]]:
    """Feed the engine; the alert changes that produced (for the idempotent alert book) and counts."""
    recent_since = now_ms - recent_s * 1000
    plates_since = now_ms - int(history_days * DAY_MS)
    counts = {"cars_from_checkpoint": 0, "plates": 0, "recent": 0}
    if checkpoint is not None:
        counts["cars_from_checkpoint"] = engine.restore_plates(checkpoint)
        plates_since = max(plates_since, int(checkpoint.get("clock_ms", 0)) - PLATES_OVERLAP_MS)
    changes: list[AlertChange] = []
    days = max(0, (recent_since - plates_since) // DAY_MS)
    log.info(
        "rebuilding rule state",
        extra={"from_checkpoint": checkpoint is not None, "plate_days": days, "recent_s": recent_s},
    )
    try:
        if checkpoint is None:
            engine.hold_bays(await history.bays_since(influx, plates_since))
        for start in range(plates_since, recent_since, DAY_MS):
            stored = await _window(influx, PLATE_SOURCES, start, min(start + DAY_MS, recent_since))
            for r in stored:
                where = engine.where(r.device_type, r.device_id)
                if where is not None:
                    changes += engine.feed_plates(where, r.channel, r.reading)
            counts["plates"] += len(stored)
            if (start - plates_since) // DAY_MS % 30 == 29:  # months of history: say how far it got
                log.info("rebuild: plates", extra={"days_done": (start - plates_since) // DAY_MS + 1, "of": days})
        for start in range(recent_since, now_ms, RECENT_WINDOW_MS):
            stored = await _window(influx, EVERYTHING, start, min(start + RECENT_WINDOW_MS, now_ms))
            for r in stored:
                where = engine.where(r.device_type, r.device_id)
                if where is not None:
                    changes += engine.feed(where, r.channel, [r.reading])
            counts["recent"] += len(stored)
    except InfluxError as exc:
        log.error("cannot read history from InfluxDB (%s); starting from the registry alone", exc)
    return changes, counts


async def _window(influx: Influx, sources: list[Source], since: int, until: int) -> list[history.Stored]:
    out: list[history.Stored] = []
    for device_type, channel, event_types in sources:
        out += [r async for r in history.read(influx, device_type, channel, since, until, event_types)]
    out.sort(key=lambda r: r.reading.ts)
    return out
