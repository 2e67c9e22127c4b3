"""What a rule sees: the device a reading came from, where it is, who is on duty, and the alert book."""

import datetime as dt
from dataclasses import dataclass
from typing import Any

from devices.alerts import Alert, AlertChange, Change, Severity, State
from devices.estate import Device, Estate, Grid
from devices.types import DeviceType
from rules.config import Rules, RulesConfig

SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


@dataclass(frozen=True, eq=False, slots=True)
class Where:
    """Where a reading comes from. Compared by identity: the engine makes one per device (and the
    fire-lane and zombie rules one per zone or car), which makes it a cheap dictionary key."""

    site: str
    device: Device
    grid: str | None
    building: str | None
    unit: str | None
    zone: str | None


class Context:
    def __init__(self, estate: Estate, config: RulesConfig) -> None:
        self.estate = estate
        self.config = config
        self.alerts: dict[tuple[str, str], Alert] = {}
        self.changes: list[AlertChange] = []
        self._grids = {g.id: g for g in estate.grids}
        self._rules: dict[Where, Rules] = {}  # merged once per place
        self._nights: dict[int, dt.date | None] = {}  # minute -> night_of
        self._radio_holders = {w.radio: w for g in estate.grids for w in g.workers if w.radio}

    def reconfigure(self, config: RulesConfig, grids: list[Grid] | None = None) -> None:
        """New settings (and rosters) from now on; the state of incidents in progress is kept."""
        self.config = config
        self._rules.clear()
        self._nights.clear()
        if grids:
            self._grids = {g.id: g for g in grids}
            self._radio_holders = {w.radio: w for g in grids for w in g.workers if w.radio}

    def local(self, ts: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ts / 1000, self.estate.site.tz)

    def rules_for(self, where: Where) -> Rules:
        found = self._rules.get(where)
        if found is None:
            found = self._rules[where] = self.config.for_device(where.site, where.device.id, where.zone, where.building)
        return found

    # -- routing ---------------------------------------------------------------------------------
    def grid_workers(self, grid: str | None, ts: int) -> list[str]:
        g = self._grids.get(grid or "")
        return [f"worker:{w.id}" for w in g.on_duty(self.local(ts))] if g else []

    def all_grid_workers(self, ts: int) -> list[str]:
        return [r for g in self._grids for r in self.grid_workers(g, ts)]

    def contacts(self, *roles: str) -> list[str]:
        return [f"contact:{c.role}" for c in self.estate.contacts if c.role in roles]

    def on_duty_radios(self, ts: int) -> list[str]:
        """Radios of grid workers on duty, and every radio no grid worker holds (the patrol's)."""
        at = self.local(ts)
        out = []
        for d in self.estate.devices:
            if d.type is not DeviceType.RADIO:
                continue
            holder = self._radio_holders.get(d.id)
            if holder is None or any(holder in g.on_duty(at) for g in self._grids.values()):
                out.append(f"radio:{d.id}")
        return out

    # -- the alert book --------------------------------------------------------------------------
    def open(
        self,
        rule: str,
        subject: str,
        where: Where,
        severity: Severity,
        title: str,
        ts: int,
        evidence: dict[str, Any],
        recipients: list[str],
        escalation: int = 0,
    ) -> Alert:
        """Open an alert, or count a repeat of the open one."""
        alert = self.alerts.get((rule, subject))
        if alert is not None and alert.state is not State.RESOLVED:
            alert.count += 1
            alert.last_ts = max(alert.last_ts, ts)
            alert.add_evidence(evidence)
            self.changes.append(AlertChange.of(Change.REPEATED, ts, alert))
            return alert
        alert = Alert(
            rule=rule,
            subject=subject,
            site=where.site,
            severity=severity,
            title=title,
            first_ts=ts,
            last_ts=ts,
            grid=where.grid,
            building=where.building,
            unit=where.unit,
            zone=where.zone,
            recipients=sorted(set(recipients)),
            evidence=[evidence],
            escalation=escalation,
        )
        self.alerts[alert.key] = alert
        self.changes.append(AlertChange.of(Change.OPENED, ts, alert))
        return alert

    def note(
        self,
        rule: str,
        subject: str,
        ts: int,
        evidence: dict[str, Any],
        *,
        severity: Severity | None = None,
        title: str | None = None,
        escalation: int | None = None,
        recipients: list[str] | None = None,
    ) -> None:
        """Add evidence to an open alert; raise its severity or escalation, retitle it, reach more people."""
        alert = self.alerts.get((rule, subject))
        if alert is None:
            return
        if severity is not None and SEVERITY_RANK[severity] > SEVERITY_RANK[alert.severity]:
            alert.severity = severity
        if title is not None:
            alert.title = title
        if escalation is not None:
            alert.escalation = max(alert.escalation, escalation)
        if recipients:
            alert.recipients = sorted(set(alert.recipients) | set(recipients))
        alert.last_ts = max(alert.last_ts, ts)
        alert.add_evidence(evidence)
        self.changes.append(AlertChange.of(Change.UPDATED, ts, alert))

    def night_of(self, ts: int) -> dt.date | None:
        """The evening a night-time ``ts`` belongs to (small hours count with the evening before); None by day."""
        minute = ts // 60_000  # night hours are whole minutes: one time-zone conversion per minute
        if minute not in self._nights:
            if len(self._nights) > 10_000:
                self._nights.clear()
            self._nights[minute] = self._night_of(minute * 60_000)
        return self._nights[minute]

    def _night_of(self, ts: int) -> dt.date | None:
        local = self.local(ts)
        night = self.config.night
        if not night.contains(local.time()):
            return None
        return local.date() if local.time() >= night.start else local.date() - dt.timedelta(days=1)

    def resolve(self, rule: str, subject: str, ts: int, evidence: dict[str, Any]) -> None:
        """Resolve automatically: the condition cleared."""
        alert = self.alerts.get((rule, subject))
        if alert is None or alert.state is State.RESOLVED:
            return
        alert.state = State.RESOLVED
        alert.resolved_ts = ts
        alert.add_evidence(evidence)
        self.changes.append(AlertChange.of(Change.RESOLVED, ts, alert))
        del self.alerts[alert.key]

    def is_open(self, rule: str, subject: str) -> bool:
        return (rule, subject) in self.alerts
