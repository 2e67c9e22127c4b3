"""Fire: a smoke sensor in alarm is critical at once; fault, tamper and low battery are maintenance."""

from typing import Any

from devices.payloads import smoke_sensor as smoke
from devices.types import Channel
from rules.alerts import Severity
from rules.context import Context, Where

MAINTENANCE_EVENTS = {"fault": "fault", "tamper": "tamper", "low_battery": "low battery"}
MAINTENANCE_STATES = {smoke.AlarmState.FAULT, smoke.AlarmState.TAMPER, smoke.AlarmState.LOW_BATTERY}


def handle(ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
    rules = ctx.rules_for(where)
    device = where.device.id
    ts = reading.ts
    alarm = (channel is Channel.EVENT and reading.type == "alarm") or (
        channel is Channel.TELEMETRY and reading.state is smoke.AlarmState.ALARM
    )
    if rules.fire.enabled and alarm:
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
    cleared = (channel is Channel.EVENT and reading.type == "alarm_cleared") or (
        channel is Channel.TELEMETRY and reading.state is smoke.AlarmState.NORMAL
    )
    if cleared:
        ctx.resolve("fire", device, ts, {"ts": ts, "cleared": True})
    if not rules.smoke_maintenance.enabled:
        return
    problem = None
    if channel is Channel.EVENT and reading.type in MAINTENANCE_EVENTS:
        problem = MAINTENANCE_EVENTS[reading.type]
    elif channel is Channel.TELEMETRY and reading.state in MAINTENANCE_STATES:
        problem = reading.state.value.replace("_", " ")
    if problem is not None:
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
    elif channel is Channel.TELEMETRY and reading.state is smoke.AlarmState.NORMAL:
        ctx.resolve("smoke_maintenance", device, ts, {"ts": ts, "state": "normal"})
