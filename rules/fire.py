"""Fire: a smoke sensor in alarm is critical at once; fault, tamper and low battery are maintenance.

Most of the estate's traffic is smoke sensors reporting all is well: that path touches nothing but
two dictionary look-ups.
"""

from typing import Any

from devices.alerts import Severity
from devices.payloads import smoke_sensor as smoke
from devices.types import Channel
from rules.context import Context, Where

MAINTENANCE_EVENTS = {"fault": "fault", "tamper": "tamper", "low_battery": "low battery"}
MAINTENANCE_STATES = {smoke.AlarmState.FAULT, smoke.AlarmState.TAMPER, smoke.AlarmState.LOW_BATTERY}
ALARM, NORMAL = smoke.AlarmState.ALARM, smoke.AlarmState.NORMAL
TELEMETRY, EVENT = Channel.TELEMETRY, Channel.EVENT


def handle(ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
    device = where.device.id
    ts = reading.ts
    if channel is TELEMETRY:
        state = reading.state
        if state is NORMAL:
            if ("fire", device) in ctx.alerts:
                ctx.resolve("fire", device, ts, {"ts": ts, "cleared": True})
            if ("smoke_maintenance", device) in ctx.alerts:
                ctx.resolve("smoke_maintenance", device, ts, {"ts": ts, "state": "normal"})
            return
        alarm = state is ALARM
        problem = state.value.replace("_", " ") if state in MAINTENANCE_STATES else None
    else:
        alarm = reading.type == "alarm"
        if reading.type == "alarm_cleared":
            ctx.resolve("fire", device, ts, {"ts": ts, "cleared": True})
        problem = MAINTENANCE_EVENTS.get(reading.type)
    rules = ctx.rules_for(where)
    if alarm and rules.fire.enabled:
        floor = f", floor {where.device.floor}" if where.device.floor is not None else ""
        ctx.open(
            "fire",
            device,
            where,
            Severity.CRITICAL,
            f"Smoke alarm: {where.unit or where.building}{floor}",
            ts,
            {"ts": ts, "smoke_obscuration_pct": reading.smoke_obscuration_pct, "temp_c": reading.temp_c},
            ctx.grid_workers(where.grid, ts)
            + ctx.contacts("property_office", "property_manager")
            + ctx.on_duty_radios(ts),
        )
        return
    if problem is not None and rules.smoke_maintenance.enabled:
        ctx.open(
            "smoke_maintenance",
            device,
            where,
            Severity.INFO,
            f"Smoke sensor {problem}: {device}",
            ts,
            {"ts": ts, "problem": problem},
            ctx.grid_workers(where.grid, ts),
        )
