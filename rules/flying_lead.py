"""Flying-lead charging (飞线充电): an e-bike charged from an extension cord on a stairwell circuit.

The signature, from field practice: at night, a circuit whose load was low (under ~50 W: corridor
lights) steps up by a charger's draw (+60 to +700 W) and holds it for ten minutes or more. A charger
then tapers (constant current, constant voltage, float), which a heater or a kettle does not; a
camera that saw an e-bike carried into the unit or its lift shortly before makes it likelier still.
A smoke sensor rising in the same unit makes it critical.

Both durations are measured from an onset (``rules/episodes.py``): the hold from the first reading
of the step, the clear from the first reading back at baseline; a spell the other way shorter than
``dropout_min`` restarts neither. The alert comes with the first reading at or after onset + hold.
"""

import datetime as dt
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from devices.alerts import Severity
from devices.types import Channel, DeviceType
from rules.context import Context, Where
from rules.episodes import Timeline

RULE = "flying_lead"
MIN = 60_000
SMOKE_WINDOW_MS = 30 * MIN
TAPER_DROP = 0.2  # the load falls this far below its plateau while still over baseline


@dataclass
class Circuit:
    step: Timeline  # the circuit stepped up by a charger's draw
    low: Timeline  # back at baseline (watched while an alert is open)
    baseline_w: float | None = None
    step_since: int | None = None  # the onset the plateau belongs to
    plateau_w: float = 0.0
    subject: str | None = None  # the open alert's subject
    tapered: bool = False
    fired_nights: set[dt.date] = field(default_factory=set)
    readings: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=20))  # (ts, power_w)


class FlyingLead:
    def __init__(self) -> None:
        self.circuits: dict[str, Circuit] = {}
        self.ebike_at: dict[str, int] = {}  # unit -> ts of the last e-bike seen going in
        self.smoke: dict[str, deque[tuple[int, float, float]]] = {}  # unit -> (ts, obscuration, temp)
        self.unit_circuits: dict[str, set[str]] = {}  # unit -> its circuits (power meters)
        self.alerting = 0  # circuits with an open alert

    def handle(self, ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
        kind = where.device.type
        if kind is DeviceType.CAMERA and channel is Channel.EVENT and reading.type == "ebike_detected":
            if where.unit:
                self.ebike_at[where.unit] = max(self.ebike_at.get(where.unit, 0), reading.ts)
        elif kind is DeviceType.SMOKE_SENSOR and channel is Channel.TELEMETRY and where.unit:
            self._smoke(ctx, where, reading)
        elif kind is DeviceType.POWER_METER and channel is Channel.TELEMETRY:
            self._power(ctx, where, reading)

    def _smoke(self, ctx: Context, where: Where, reading: Any) -> None:
        assert where.unit is not None
        recent = self.smoke.get(where.unit)
        if recent is None:
            recent = self.smoke[where.unit] = deque(maxlen=200)
        ts = reading.ts
        recent.append((ts, reading.smoke_obscuration_pct, reading.temp_c))
        if recent[0][0] < ts - SMOKE_WINDOW_MS:
            while recent and recent[0][0] < ts - SMOKE_WINDOW_MS:
                recent.popleft()
        # Smoke only matters to an open, not yet critical alert in the same unit: look for one first
        # (thousands of smoke readings an hour, almost never such an alert).
        if not self.alerting:
            return
        subjects = [self.circuits[c].subject for c in self.unit_circuits.get(where.unit, ())]
        open_alerts = [a for s in subjects if s and (a := ctx.alerts.get((RULE, s))) is not None]
        if not any(a.severity is not Severity.CRITICAL for a in open_alerts) or not self._smoke_rising(where.unit):
            return
        for alert in open_alerts:
            if alert.severity is not Severity.CRITICAL:
                ctx.note(
                    RULE,
                    alert.subject,
                    reading.ts,
                    {
                        "ts": reading.ts,
                        "smoke_sensor": where.device.id,
                        "smoke_obscuration_pct": reading.smoke_obscuration_pct,
                        "temp_c": reading.temp_c,
                    },
                    severity=Severity.CRITICAL,
                    title=f"Flying-lead charging with smoke rising: {where.unit}",
                )

    def _smoke_rising(self, unit: str) -> bool:
        recent = self.smoke.get(unit)
        if not recent:
            return False
        _, obscuration, temp = recent[-1]
        low_obscuration = min(r[1] for r in recent)
        low_temp = min(r[2] for r in recent)
        return temp - low_temp >= 5.0 or (obscuration >= 1.0 and obscuration >= 3 * max(low_obscuration, 0.1))

    def _quiet(self, ctx: Context, device: str, rules: Any, ts: int) -> bool:
        local = ctx.local(ts).time()
        return device in rules.whitelist or any(w.covers(device, local) for w in rules.schedules)

    def _power(self, ctx: Context, where: Where, reading: Any) -> None:
        rules = ctx.rules_for(where).flying_lead
        device = where.device.id
        c = self.circuits.get(device)
        if c is None:
            dropout_ms = int(rules.dropout_min * MIN)
            c = self.circuits[device] = Circuit(Timeline(dropout_ms, keep=200), Timeline(dropout_ms, keep=200))
            if where.unit:
                self.unit_circuits.setdefault(where.unit, set()).add(device)
        ts, power = reading.ts, reading.power_w
        c.readings.append((ts, power))
        if c.baseline_w is None:
            c.baseline_w = power
        step = power - c.baseline_w
        charging = c.baseline_w < rules.baseline_max_w and rules.step_min_w <= step <= rules.step_max_w
        c.step.observe(device, ts, charging)
        if c.subject is not None:
            self._while_open(ctx, where, c, rules, reading, step)
            return
        onset = c.step.onset(ts)
        if not charging:
            if onset is None and power < rules.baseline_max_w:  # learn the low baseline; never from a step
                c.baseline_w = 0.8 * c.baseline_w + 0.2 * power
            return
        if onset != c.step_since:  # a new step: its own plateau
            c.step_since, c.plateau_w = onset, power
        c.plateau_w = max(c.plateau_w, power)
        if onset is None or ts - onset < rules.hold_min * MIN or not rules.enabled:
            return
        night = ctx.night_of(ts)
        if night is None or night in c.fired_nights:
            return
        if self._quiet(ctx, device, rules, ts):
            return
        c.fired_nights.add(night)
        c.subject = f"{where.unit or device}:{device}:{night.isoformat()}"
        self.alerting += 1
        ebike = self._ebike_recent(where, ts, rules.ebike_window_min)
        confidence = _confidence(tapered=False, ebike=ebike)
        severity = Severity.CRITICAL if where.unit and self._smoke_rising(where.unit) else Severity.WARNING
        ctx.open(
            RULE,
            c.subject,
            where,
            severity,
            f"Possible flying-lead charging: {where.unit or device} (+{step:.0f} W for "
            f"{(ts - onset) / MIN:.0f} min)",
            ts,
            {
                "ts": ts,
                "baseline_w": round(c.baseline_w, 1),
                "power_w": power,
                "step_w": round(step, 1),
                "since_ts": onset,
                "confidence": confidence,
                "ebike_seen": ebike,
                "readings": [{"ts": t, "power_w": p} for t, p in list(c.readings)[-12:]],
            },
            ctx.grid_workers(where.grid, ts) + ctx.contacts("property_office"),
        )

    def _while_open(self, ctx: Context, where: Where, c: Circuit, rules: Any, reading: Any, step: float) -> None:
        assert c.subject is not None and c.baseline_w is not None
        ts, power = reading.ts, reading.power_w
        if not c.tapered and c.baseline_w + 20 < power <= c.plateau_w * (1 - TAPER_DROP):
            c.tapered = True  # a charger's constant-voltage phase
            ebike = self._ebike_recent(where, ts, rules.ebike_window_min)
            ctx.note(
                RULE,
                c.subject,
                ts,
                {
                    "ts": ts,
                    "power_w": power,
                    "tapering_from_w": c.plateau_w,
                    "confidence": _confidence(tapered=True, ebike=ebike),
                },
            )
        c.low.observe(where.device.id, ts, power <= c.baseline_w + 20)
        low_since = c.low.onset(ts)
        if c.low.on and low_since is not None and ts - low_since >= rules.clear_min * MIN:
            ctx.resolve(RULE, c.subject, ts, {"ts": ts, "power_w": power, "back_to_baseline": True,
                                              "low_since_ts": low_since})  # fmt: skip
            dropout_ms = int(rules.dropout_min * MIN)
            c.subject, c.step_since, c.tapered = None, None, False
            c.step, c.low = Timeline(dropout_ms, keep=200), Timeline(dropout_ms, keep=200)
            self.alerting -= 1

    def _ebike_recent(self, where: Where, ts: int, window_min: float) -> bool:
        seen = self.ebike_at.get(where.unit or "")
        return seen is not None and 0 <= ts - seen <= window_min * MIN


def _confidence(*, tapered: bool, ebike: bool) -> float:
    return round(min(1.0, 0.6 + (0.2 if tapered else 0.0) + (0.2 if ebike else 0.0)), 2)
