"""The charging load per building, once a minute of event time: the series the charging boards
draw (store/now_series.py). Not a rule: it raises nothing, it sums.

Each port's value at a minute's end is its latest reading at or before it (ports report every
minute or so, and a reading may arrive a little after the minute it belongs to: the two latest are
kept). A port not heard from within two of its intervals is left out, and so is a building with no
port heard: a gap on the board, not a zero that is not known.
"""

from dataclasses import dataclass, field
from typing import Any

from devices.types import Channel
from rules.context import Context, Where
from store.now_series import CHARGING_LOAD_PERIOD_S, charging_load_line

PERIOD_MS = CHARGING_LOAD_PERIOD_S * 1000


@dataclass
class _Port:
    where: Where
    readings: list[tuple[int, float, bool]] = field(default_factory=list)  # (ts, power, charging), 2 latest

    def at(self, t: int) -> tuple[int, float, bool] | None:
        return next((r for r in reversed(self.readings) if r[0] <= t), None)


class ChargingLoad:
    def __init__(self, delay_ms: int) -> None:
        self.delay_ms = delay_ms  # a minute is summed once the clock is this far past it
        self.ports: dict[tuple[str, int], _Port] = {}
        self.lines: list[str] = []
        self._next_ms: int | None = None

    def handle(self, ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
        if channel is not Channel.TELEMETRY or where.building is None:
            return
        # Minutes this reading's stamp has passed are summed before it replaces what they need.
        self.tick(ctx, reading.ts)
        port = self.ports.setdefault((where.device.id, reading.port), _Port(where))
        port.where = where
        entry = (reading.ts, float(reading.power_w), str(getattr(reading.state, "value", reading.state)) == "charging")
        if not port.readings or reading.ts >= port.readings[-1][0]:
            port.readings = [*port.readings[-1:], entry]
        elif len(port.readings) == 1 or reading.ts > port.readings[0][0]:
            port.readings = [entry, port.readings[-1]]  # late, but newer than the older one kept

    def tick(self, ctx: Context, now: int) -> None:
        if self._next_ms is None:
            if not self.ports:
                return
            self._next_ms = (now - self.delay_ms) // PERIOD_MS * PERIOD_MS + PERIOD_MS
        while self._next_ms + self.delay_ms <= now:
            self._sum(self._next_ms)
            self._next_ms += PERIOD_MS

    def _sum(self, t: int) -> None:
        by_building: dict[str, list[Any]] = {}
        for port in self.ports.values():
            found = port.at(t)
            if found is None or t - found[0] > 2 * port.where.device.reporting_interval_s * 1000:
                continue
            assert port.where.building is not None
            total = by_building.setdefault(port.where.building, [0.0, 0, 0, port.where])
            total[0] += found[1]
            total[1] += found[2]
            total[2] += 1
        for building, (power, charging, ports, where) in sorted(by_building.items()):
            self.lines.append(charging_load_line(where.site, building, where.grid, power, charging, ports, t))

    def take(self) -> list[str]:
        """The points summed since the last call (the service writes them)."""
        out, self.lines = self.lines, []
        return out
