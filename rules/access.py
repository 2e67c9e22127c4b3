"""Access: a door held open too long, forced open, or tailgated: a warning to security."""

from typing import Any

from devices.alerts import Severity
from devices.types import Channel
from rules.context import Context, Where

WATCHED = frozenset({"held_open", "forced_open", "tailgating", "door_closed"})


def handle(ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
    if channel is not Channel.EVENT or reading.type not in WATCHED:
        return  # most door events are people coming and going
    rules = ctx.rules_for(where)
    door = where.device.id
    ts = reading.ts
    if reading.type == "door_closed":
        if ("door_held_open", door) in ctx.alerts:
            ctx.resolve("door_held_open", door, ts, {"ts": ts, "closed": True})
        return
    place = where.unit or where.device.label or door
    recipients = ctx.contacts("security") + ctx.grid_workers(where.grid, ts)
    if (
        reading.type == "held_open"
        and rules.door_held_open.enabled
        and reading.open_s >= rules.door_held_open.min_open_s
    ):
        ctx.open(
            "door_held_open",
            door,
            where,
            Severity.WARNING,
            f"Door held open: {place}",
            ts,
            {"ts": ts, "open_s": reading.open_s},
            recipients,
        )
    elif reading.type == "forced_open" and rules.door_forced.enabled:
        ctx.open("door_forced", door, where, Severity.WARNING, f"Door forced open: {place}", ts, {"ts": ts}, recipients)
    elif reading.type == "tailgating" and rules.tailgating.enabled:
        ctx.open(
            "tailgating",
            door,
            where,
            Severity.WARNING,
            f"Tailgating: {place}",
            ts,
            {"ts": ts, "persons": reading.persons},
            recipients,
        )
