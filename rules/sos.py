"""Radio SOS: critical, with the radio's position, to every on-duty radio and grid worker."""

from typing import Any

from devices.alerts import Severity
from devices.types import Channel
from rules.context import Context, Where


def handle(ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
    if channel is not Channel.EVENT or reading.type != "sos" or not ctx.rules_for(where).sos.enabled:
        return
    ts = reading.ts
    ctx.open(
        "sos",
        where.device.id,
        where,
        Severity.CRITICAL,
        f"SOS from {where.device.label or where.device.id}",
        ts,
        {"ts": ts, "lat": reading.lat, "lon": reading.lon},
        ctx.on_duty_radios(ts) + ctx.all_grid_workers(ts) + ctx.contacts("security"),
    )
