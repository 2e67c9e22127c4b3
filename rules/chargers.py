"""Charging piles: port over-temperature, fault codes, and repeated overload stops in one night."""

import datetime as dt
from typing import Any

from devices.alerts import Severity
from devices.types import Channel
from rules.context import Context, Where


class Chargers:
    def __init__(self) -> None:
        # (device, port, night) -> overload stops seen
        self.overloads: dict[tuple[str, int, dt.date], int] = {}

    def handle(self, ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
        rules = ctx.rules_for(where)
        device = where.device.id
        ts = reading.ts
        if channel is Channel.TELEMETRY:
            subject = f"{device}:{reading.port}"
            limit = rules.charger_overtemp
            if limit.enabled and reading.temp_c >= limit.threshold_c:
                ctx.open(
                    "charger_overtemp",
                    subject,
                    where,
                    Severity.WARNING,
                    f"Charger {device} port {reading.port} at {reading.temp_c:.0f} °C",
                    ts,
                    {"ts": ts, "temp_c": reading.temp_c, "power_w": reading.power_w},
                    _caretakers(ctx, where, ts),
                )
            elif reading.temp_c < limit.clear_below_c and ("charger_overtemp", subject) in ctx.alerts:
                ctx.resolve("charger_overtemp", subject, ts, {"ts": ts, "temp_c": reading.temp_c})
            return
        if reading.type == "fault" and rules.charger_fault.enabled:
            ctx.open(
                "charger_fault",
                f"{device}:{reading.port}",
                where,
                Severity.WARNING,
                f"Charger {device} port {reading.port} fault {reading.code}",
                ts,
                {"ts": ts, "code": reading.code},
                _caretakers(ctx, where, ts),
            )
        elif reading.type == "session_stop" and reading.reason.value == "overload" and rules.charger_overload.enabled:
            night = ctx.night_of(ts)
            if night is None:
                return
            key = (device, reading.port, night)
            self.overloads[key] = self.overloads.get(key, 0) + 1
            if self.overloads[key] >= rules.charger_overload.stops_per_night:
                ctx.open(
                    "charger_overload",
                    f"{device}:{reading.port}:{night.isoformat()}",
                    where,
                    Severity.WARNING,
                    f"Charger {device} port {reading.port} stopped on overload {self.overloads[key]} times tonight",
                    ts,
                    {"ts": ts, "session_id": reading.session_id, "energy_wh": reading.energy_wh},
                    _caretakers(ctx, where, ts),
                )


def _caretakers(ctx: Context, where: Where, ts: int) -> list[str]:
    """Who looks after a pile: the grid's workers on duty and the property office."""
    return ctx.grid_workers(where.grid, ts) + ctx.contacts("property_office")
