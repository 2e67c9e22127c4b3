"""Per building, once a minute of event time: the charging load and hottest port of its piles
(``charging_load``) and the mean signal of its smoke sensors (``smoke_signal``), the series the
boards draw (store/now_series.py). Not rules: they raise nothing, they summarise.

Each series' value at a minute's end is its latest reading at or before it (devices report every
minute or few, and a reading may arrive a little after the minute it belongs to: the two latest are
kept). A series not heard from within two of its device's intervals is left out, and so is a
building with none heard: a gap on the board, not a zero that is not known.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from devices.types import Channel
from rules.context import Context, Where
from store.now_series import CHARGING_LOAD_PERIOD_S, charging_load_line, smoke_signal_line

PERIOD_MS = CHARGING_LOAD_PERIOD_S * 1000
Values = tuple[float, ...]
# (minute end, building, the Where of one of its devices, the values of its series still reporting)
Summarise = Callable[[int, str, Where, Sequence[Values]], str]


@dataclass
class _Series:
    where: Where
    readings: list[tuple[int, Values]] = field(default_factory=list)  # (ts, values), the two latest

    def at(self, t: int) -> Values | None:
        found = next((r for r in reversed(self.readings) if r[0] <= t), None)
        if found is None or t - found[0] > 2 * self.where.device.reporting_interval_s * 1000:
            return None
        return found[1]

    def add(self, ts: int, values: Values) -> None:
        if not self.readings or ts >= self.readings[-1][0]:
            self.readings = [*self.readings[-1:], (ts, values)]
        elif len(self.readings) == 1 or ts > self.readings[0][0]:
            self.readings = [(ts, values), self.readings[-1]]  # late, but newer than the older one kept


class PerMinute:
    """One kind of per-building minute: series keyed by the caller, summarised per building."""

    def __init__(self, delay_ms: int, summarise: Summarise) -> None:
        self.delay_ms = delay_ms  # a minute is summarised once the clock is this far past it
        self.summarise = summarise
        self.series: dict[tuple[str, int], _Series] = {}
        self.lines: list[str] = []
        self._next_ms: int | None = None

    def add(self, where: Where, key: tuple[str, int], ts: int, values: Values) -> None:
        # Minutes this reading's stamp has passed are summarised before it replaces what they need.
        self.tick(ts)
        found = self.series.get(key)
        if found is None:
            found = self.series[key] = _Series(where)
        found.where = where
        found.add(ts, values)

    def tick(self, now: int) -> None:
        if self._next_ms is None:
            if not self.series:
                return
            self._next_ms = (now - self.delay_ms) // PERIOD_MS * PERIOD_MS + PERIOD_MS
        while self._next_ms + self.delay_ms <= now:
            self._summarise(self._next_ms)
            self._next_ms += PERIOD_MS

    def _summarise(self, t: int) -> None:
        by_building: dict[str, tuple[Where, list[Values]]] = {}
        for s in self.series.values():
            values = s.at(t)
            if values is not None and s.where.building is not None:
                by_building.setdefault(s.where.building, (s.where, []))[1].append(values)
        for building, (where, found) in sorted(by_building.items()):
            self.lines.append(self.summarise(t, building, where, found))


def _charging(t: int, building: str, where: Where, ports: Sequence[Values]) -> str:
    power = sum(p[0] for p in ports)
    return charging_load_line(where.site, building, where.grid, power, sum(int(p[1]) for p in ports), len(ports),
                              max(p[2] for p in ports), t)  # fmt: skip


def _signal(t: int, building: str, where: Where, sensors: Sequence[Values]) -> str:
    return smoke_signal_line(where.site, building, where.grid, sum(s[0] for s in sensors) / len(sensors),
                             len(sensors), t)  # fmt: skip


class BuildingMinutes:
    """The engine's handlers for chargers and smoke sensors, and what they summarised to write."""

    def __init__(self, delay_ms: int) -> None:
        self.charging = PerMinute(delay_ms, _charging)
        self.signal = PerMinute(delay_ms, _signal)

    def charger(self, ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
        if channel is Channel.TELEMETRY and where.building is not None:
            charging = str(getattr(reading.state, "value", reading.state)) == "charging"
            values = (float(reading.power_w), float(charging), float(reading.temp_c))
            self.charging.add(where, (where.device.id, reading.port), reading.ts, values)

    def smoke(self, ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
        if channel is Channel.TELEMETRY and where.building is not None:
            self.signal.add(where, (where.device.id, 0), reading.ts, (float(reading.rssi_dbm),))

    def tick(self, ctx: Context, now: int) -> None:
        self.charging.tick(now)
        self.signal.tick(now)

    def take(self) -> list[str]:
        """The points summarised since the last call (the service writes them)."""
        out = self.charging.lines + self.signal.lines
        self.charging.lines, self.signal.lines = [], []
        return out
