"""The alert book in the registry: the rules engine's changes applied idempotently, people's actions
(acknowledge, resolve, assign) with an audit trail, and the notifier outbox.

Applying is idempotent so that a restarted engine, which replays recent history to rebuild its
state, can hand the store every change again: a change the store already reflects does nothing and
notifies nobody.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from store.registry.db import Registry
from store.registry.schema import AlertEventRow, AlertRow, NotificationRow
from store.series import escape_key, escape_string

SEVERITIES = ("info", "warning", "critical")
EVIDENCE_KEPT = 20
RULES_ACTOR = "rules"


class AlertNotFoundError(LookupError):
    pass


class AlertStateError(ValueError):
    """The action does not apply to the alert as it stands (acknowledging a resolved alert)."""


@dataclass(frozen=True, slots=True)
class AlertView:
    id: int
    site: str
    rule: str
    subject: str
    state: str
    severity: str
    title: str
    escalation: int
    count: int
    first_ts: int
    last_ts: int
    resolved_ts: int | None
    grid: str | None
    building: str | None
    unit: str | None
    zone: str | None
    assignee: str | None
    recipients: list[str]
    evidence: list[dict[str, Any]]
    ack_escalations: int
    opened_at_ms: int
    acknowledged_at_ms: int | None
    resolved_at_ms: int | None

    @classmethod
    def of(cls, r: AlertRow) -> "AlertView":
        return cls(
            r.id, r.site_id, r.rule, r.subject, r.state, r.severity, r.title, r.escalation, r.count, r.first_ts,
            r.last_ts, r.resolved_ts, r.grid_id, r.building_id, r.unit_id, r.zone_id, r.assignee,
            list(r.recipients), list(r.evidence), r.ack_escalations, r.opened_at_ms, r.acknowledged_at_ms,
            r.resolved_at_ms,
        )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# AlertView's fields, in order, as columns.
_VIEW_COLUMNS = (
    AlertRow.id, AlertRow.site_id, AlertRow.rule, AlertRow.subject, AlertRow.state, AlertRow.severity, AlertRow.title,
    AlertRow.escalation, AlertRow.count, AlertRow.first_ts, AlertRow.last_ts, AlertRow.resolved_ts, AlertRow.grid_id,
    AlertRow.building_id, AlertRow.unit_id, AlertRow.zone_id, AlertRow.assignee, AlertRow.recipients,
    AlertRow.evidence, AlertRow.ack_escalations, AlertRow.opened_at_ms, AlertRow.acknowledged_at_ms,
    AlertRow.resolved_at_ms,
)  # fmt: skip

ALERTS_MEASUREMENT = "alerts"
OPEN_MEASUREMENT = "alerts_open"
ESTATE_GRID = "_estate"  # the grid tag of alerts no grid owns (radios, estate-wide rules)


def mirror_line(alert: AlertView, action: str, ts_ms: int) -> str:
    """The alert's ``alerts`` point in InfluxDB (Grafana's annotations and alert boards): one per
    change, stamped ``ts_ms`` plus the id's last digits in ns, so changes in one ms never overwrite."""
    tags = {"site": alert.site, "rule": alert.rule, "severity": alert.severity, "action": action}
    tags |= {k: v for k, v in (("grid", alert.grid), ("building", alert.building)) if v}
    fields = (
        f"alert_id={alert.id}i,subject={escape_string(alert.subject)},title={escape_string(alert.title)}"
        f",state={escape_string(alert.state)},count={alert.count}i,escalation={alert.escalation}i"
    )
    if alert.acknowledged_at_ms is not None:
        fields += f",ack_s={(alert.acknowledged_at_ms - alert.opened_at_ms) / 1000:.3f}"
    return (
        ALERTS_MEASUREMENT
        + "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()))
        + f" {fields} {ts_ms * 1_000_000 + alert.id % 1_000_000}"
    )


def open_lines(
    site: str, rules: Sequence[str], grids: Sequence[str], counts: Mapping[tuple[str, str, str, str], int], ts_ns: int
) -> list[str]:
    """``alerts_open`` points (ns stamps): every (rule, grid) each time, zeros included, so a board's last value
    is never a count that has since gone to zero."""
    lines = []
    for rule in sorted({*rules, *(k[0] for k in counts)}):
        for grid in sorted({*grids, ESTATE_GRID, *(k[1] for k in counts if k[0] == rule)}):
            mine = {k: n for k, n in counts.items() if k[0] == rule and k[1] == grid}
            fields = {sev: sum(n for k, n in mine.items() if k[2] == sev) for sev in SEVERITIES}
            fields |= {st: sum(n for k, n in mine.items() if k[3] == st) for st in ("open", "acknowledged")}
            body = ",".join(f"{k}={v}i" for k, v in fields.items())
            tags = f"grid={escape_key(grid)},rule={escape_key(rule)},site={escape_key(site)}"
            lines.append(f"{OPEN_MEASUREMENT},{tags} {body} {ts_ns}")
    return lines


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at_ms: int
    actor: str
    action: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one engine change did: ``action`` is opened, repeated, updated, escalated,
    resolved or reopened; ``notify`` says whether people should hear of it."""

    alert: AlertView
    action: str
    notify: bool


@dataclass(frozen=True, slots=True)
class Outgoing:
    id: int
    key: str
    channel: str
    alert_id: int
    message: dict[str, Any]
    attempts: int


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def _merge_evidence(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = list(old)
    for item in new:
        if item not in out:
            out.append(item)
    return out[-EVIDENCE_KEPT:]


class AlertStore:
    def __init__(self, registry: Registry, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self._clock = clock

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- the engine's changes --------------------------------------------------------------------
    async def apply(self, change: str, ts: int, snap: dict[str, Any]) -> Applied | None:
        """Apply one engine change (``opened``, ``repeated``, ``updated``, ``resolved``)."""
        async with self.registry.session() as s, s.begin():
            row = await self._open_row(s, snap["site"], snap["rule"], snap["subject"])
            if change == "resolved":
                if row is None:
                    return None
                self._close(s, row, ts, RULES_ACTOR, "resolved", {"ts": ts, "evidence": snap["evidence"][-1:]})
                return Applied(AlertView.of(row), "resolved", True)
            if row is None:
                if await self._seen_closed(s, snap, ts):
                    return None  # an episode that already ended, replayed after a restart
                row = self._insert(s, snap, ts)
                await s.flush()
                action = "opened" if change == "opened" else "reopened"
                self._audit(s, row.id, RULES_ACTOR, action, {"ts": ts, "severity": row.severity})
                return Applied(AlertView.of(row), action, True)
            if change == "opened" and snap["first_ts"] == row.first_ts:
                change = "updated"  # the same opening replayed after a restart: merge, do not count
            if change in ("opened", "repeated"):
                if ts <= row.last_ts and change == "repeated":
                    return None  # replayed: already counted
                row.count += 1
                row.last_ts = max(row.last_ts, ts)
                row.evidence = _merge_evidence(row.evidence, snap["evidence"][-1:])
                return Applied(AlertView.of(row), "repeated", False)
            return self._update(s, row, snap, ts)

    def _update(self, s: AsyncSession, row: AlertRow, snap: dict[str, Any], ts: int) -> Applied | None:
        raised = _rank(snap["severity"]) > _rank(row.severity) or snap["escalation"] > row.escalation
        evidence = _merge_evidence(row.evidence, snap["evidence"])
        recipients = sorted(set(row.recipients) | set(snap["recipients"]))
        if not raised and evidence == row.evidence and recipients == row.recipients and snap["title"] == row.title:
            return None
        if raised:
            self._audit(
                s, row.id, RULES_ACTOR, "escalated",
                {"ts": ts, "severity": snap["severity"], "escalation": snap["escalation"]},
            )  # fmt: skip
        if _rank(snap["severity"]) > _rank(row.severity):
            row.severity = snap["severity"]
            row.severity_at_ms = self.now_ms()
        row.escalation = max(row.escalation, snap["escalation"])
        row.title, row.recipients, row.evidence = snap["title"], recipients, evidence
        row.last_ts = max(row.last_ts, ts)
        return Applied(AlertView.of(row), "escalated" if raised else "updated", raised)

    def _insert(self, s: AsyncSession, snap: dict[str, Any], ts: int) -> AlertRow:
        row = AlertRow(
            site_id=snap["site"],
            rule=snap["rule"],
            subject=snap["subject"],
            open_key=f"{snap['rule']}/{snap['subject']}",
            state="open",
            severity=snap["severity"],
            title=snap["title"][:300],
            escalation=snap["escalation"],
            count=1,
            first_ts=snap["first_ts"],
            last_ts=max(ts, snap["last_ts"]),
            grid_id=snap["grid"],
            building_id=snap["building"],
            unit_id=snap["unit"],
            zone_id=snap["zone"],
            recipients=list(snap["recipients"]),
            evidence=list(snap["evidence"])[-EVIDENCE_KEPT:],
            ack_escalations=0,
            opened_at_ms=self.now_ms(),
        )
        s.add(row)
        return row

    # -- people ----------------------------------------------------------------------------------
    async def acknowledge(self, alert_id: int, actor: str, note: str | None = None) -> AlertView:
        async with self.registry.session() as s, s.begin():
            row = await self._row(s, alert_id)
            if row.state != "open":
                raise AlertStateError(f"alert {alert_id} is {row.state}, only an open alert can be acknowledged")
            row.state, row.acknowledged_at_ms = "acknowledged", self.now_ms()
            self._audit(s, row.id, actor, "acknowledged", {"note": note} if note else {})
            return AlertView.of(row)

    async def resolve(self, alert_id: int, actor: str, note: str | None = None) -> AlertView:
        async with self.registry.session() as s, s.begin():
            row = await self._row(s, alert_id)
            if row.state == "resolved":
                raise AlertStateError(f"alert {alert_id} is already resolved")
            self._close(s, row, None, actor, "resolved", {"note": note} if note else {})
            return AlertView.of(row)

    async def assign(self, alert_id: int, assignee: str | None, actor: str) -> AlertView:
        async with self.registry.session() as s, s.begin():
            row = await self._row(s, alert_id)
            if row.state == "resolved":
                raise AlertStateError(f"alert {alert_id} is resolved; reopen it by hand is not supported")
            row.assignee = assignee
            self._audit(s, row.id, actor, "assigned", {"assignee": assignee})
            return AlertView.of(row)

    async def escalate_unacknowledged(
        self, timeouts_s: Mapping[str, Sequence[float]], recipients: Callable[[AlertView, int], list[str]]
    ) -> list[AlertView]:
        """Raise open alerts nobody acknowledged in time: ``timeouts_s[severity][n]`` seconds after the
        alert reached its severity (its opening, or a raise since) is the (n+1)th escalation;
        ``recipients`` names who the next level reaches."""
        now = self.now_ms()
        raised: list[AlertView] = []
        first_steps = [steps[0] for steps in timeouts_s.values() if steps]
        if not first_steps:
            return raised
        # Only alerts old enough for the shortest first step are loaded: usually none at all.
        oldest = now - int(min(first_steps) * 1000)
        async with self.registry.session() as s, s.begin():
            since = func.coalesce(AlertRow.severity_at_ms, AlertRow.opened_at_ms)
            query = select(AlertRow).where(AlertRow.state == "open", since <= oldest)
            rows = (await s.scalars(query)).all()
            for row in rows:
                steps = timeouts_s.get(row.severity, ())
                if row.ack_escalations >= len(steps):
                    continue
                if now - (row.severity_at_ms or row.opened_at_ms) < steps[row.ack_escalations] * 1000:
                    continue
                row.ack_escalations += 1
                view = AlertView.of(row)
                extra = recipients(view, row.ack_escalations)
                row.recipients = sorted(set(row.recipients) | set(extra))
                waited = round((now - row.opened_at_ms) / 1000)
                self._audit(
                    s, row.id, RULES_ACTOR, "escalated",
                    {"level": row.ack_escalations, "unacknowledged_s": waited, "to": extra},
                )  # fmt: skip
                raised.append(AlertView.of(row))
        return raised

    # -- reading ---------------------------------------------------------------------------------
    async def open_alerts(self, site: str | None = None) -> list[AlertView]:
        async with self.registry.session() as s:
            query = select(AlertRow).where(AlertRow.open_key.is_not(None)).order_by(AlertRow.id)
            if site is not None:
                query = query.where(AlertRow.site_id == site)
            return [AlertView.of(r) for r in (await s.scalars(query)).all()]

    async def search(
        self,
        *,
        site: str | None = None,
        states: Sequence[str] | None = None,
        rule: str | None = None,
        subject: str | None = None,
        severity: str | None = None,
        grids: Sequence[str] | None = None,
        building: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[AlertView], int]:
        """Alerts matching every filter given, newest event first, and how many match in all.
        ``since_ms``/``until_ms`` bound the alert's last event time."""
        conditions = []
        if site is not None:
            conditions.append(AlertRow.site_id == site)
        if states:
            conditions.append(AlertRow.state.in_(states))
        if rule is not None:
            conditions.append(AlertRow.rule == rule)
        if subject is not None:
            conditions.append(AlertRow.subject == subject)
        if severity is not None:
            conditions.append(AlertRow.severity == severity)
        if grids is not None:
            conditions.append(AlertRow.grid_id.in_(grids))
        if building is not None:
            conditions.append(AlertRow.building_id == building)
        if since_ms is not None:
            conditions.append(AlertRow.last_ts >= since_ms)
        if until_ms is not None:
            conditions.append(AlertRow.last_ts < until_ms)
        async with self.registry.session() as s:
            total = await s.scalar(select(func.count()).select_from(AlertRow).where(*conditions))
            # Columns, not ORM objects: materialising a page of 50 as objects cost twice as much.
            rows = await s.execute(
                select(*_VIEW_COLUMNS).where(*conditions)
                .order_by(AlertRow.last_ts.desc(), AlertRow.id.desc()).limit(limit).offset(offset)
            )  # fmt: skip
            return [AlertView(*r) for r in rows.all()], int(total or 0)

    async def open_counts(self, site: str) -> dict[tuple[str, str, str, str], int]:
        """Alerts not resolved, by (rule, grid, severity, state)."""
        async with self.registry.session() as s:
            rows = await s.execute(
                select(AlertRow.rule, AlertRow.grid_id, AlertRow.severity, AlertRow.state, func.count())
                .where(AlertRow.open_key.is_not(None), AlertRow.site_id == site)
                .group_by(AlertRow.rule, AlertRow.grid_id, AlertRow.severity, AlertRow.state)
            )
            return {(r, g or ESTATE_GRID, sev, st): n for r, g, sev, st, n in rows.all()}

    async def get(self, alert_id: int) -> tuple[AlertView, list[AuditEntry]]:
        async with self.registry.session() as s:
            row = await self._row(s, alert_id)
            events = (
                await s.scalars(
                    select(AlertEventRow).where(AlertEventRow.alert_id == alert_id).order_by(AlertEventRow.id)
                )
            ).all()
            return AlertView.of(row), [AuditEntry(e.at_ms, e.actor, e.action, dict(e.detail)) for e in events]

    # -- the outbox ------------------------------------------------------------------------------
    async def enqueue(self, key: str, channel: str, alert_id: int, message: dict[str, Any]) -> bool:
        """Queue a message once: False when ``key`` was queued before (a replay or a restart)."""
        return await self.enqueue_many([(key, channel, alert_id, message)]) == 1

    async def enqueue_many(self, items: Sequence[tuple[str, str, int, dict[str, Any]]]) -> int:
        """Queue (key, channel, alert id, message) items in one transaction; keys queued before are
        skipped. Returns how many were new."""
        if not items:
            return 0
        try:
            return await self._insert_new(items)
        except IntegrityError:  # another session queued one of these keys between our look and insert
            return await self._insert_new(items)

    async def _insert_new(self, items: Sequence[tuple[str, str, int, dict[str, Any]]]) -> int:
        now = self.now_ms()
        async with self.registry.session() as s, s.begin():
            keys = [k for k, _, _, _ in items]
            seen = set((await s.scalars(select(NotificationRow.key).where(NotificationRow.key.in_(keys)))).all())
            new = list({i[0]: i for i in items if i[0] not in seen}.values())
            if new:  # one executemany: a fire alarm names dozens of radios
                await s.execute(
                    insert(NotificationRow),
                    [
                        {
                            "key": key, "channel": channel, "alert_id": alert_id, "message": message,
                            "state": "pending", "attempts": 0, "next_at_ms": now, "created_at_ms": now,
                        }
                        for key, channel, alert_id, message in new
                    ],
                )  # fmt: skip
        return len(new)

    async def due(self, channel: str, limit: int = 100) -> list[Outgoing]:
        async with self.registry.session() as s:
            rows = (
                await s.scalars(
                    select(NotificationRow)
                    .where(
                        NotificationRow.channel == channel,
                        NotificationRow.state == "pending",
                        NotificationRow.next_at_ms <= self.now_ms(),
                    )
                    .order_by(NotificationRow.id)
                    .limit(limit)
                )
            ).all()
            return [Outgoing(r.id, r.key, r.channel, r.alert_id, dict(r.message), r.attempts) for r in rows]

    async def settle(self, ids: Sequence[int], state: str, error: str | None = None) -> None:
        """Mark messages ``sent``, ``folded`` (into a summary that was sent) or ``failed`` for good."""
        async with self.registry.session() as s, s.begin():
            await s.execute(
                update(NotificationRow)
                .where(NotificationRow.id.in_(ids))
                .values(state=state, sent_at_ms=self.now_ms(), error=error and error[:500])
            )

    async def retry_later(self, ids: Sequence[int], delay_s: float, error: str) -> None:
        async with self.registry.session() as s, s.begin():
            await s.execute(
                update(NotificationRow)
                .where(NotificationRow.id.in_(ids))
                .values(
                    attempts=NotificationRow.attempts + 1,
                    next_at_ms=self.now_ms() + int(delay_s * 1000),
                    error=error[:500],
                )
            )

    async def outbox(self, channel: str | None = None) -> list[tuple[str, str, int]]:
        """(key, state, attempts) of every queued message, oldest first: for tests and operators."""
        async with self.registry.session() as s:
            query = select(NotificationRow).order_by(NotificationRow.id)
            if channel is not None:
                query = query.where(NotificationRow.channel == channel)
            return [(r.key, r.state, r.attempts) for r in (await s.scalars(query)).all()]

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    async def _open_row(s: AsyncSession, site: str, rule: str, subject: str) -> AlertRow | None:
        query = select(AlertRow).where(AlertRow.site_id == site, AlertRow.open_key == f"{rule}/{subject}")
        return (await s.scalars(query)).first()

    @staticmethod
    async def _seen_closed(s: AsyncSession, snap: dict[str, Any], ts: int) -> bool:
        """A resolved alert of the same episode (same first_ts) that already covers ``ts``."""
        query = select(AlertRow.last_ts, AlertRow.resolved_ts).where(
            AlertRow.site_id == snap["site"],
            AlertRow.rule == snap["rule"],
            AlertRow.subject == snap["subject"],
            AlertRow.first_ts == snap["first_ts"],
            AlertRow.open_key.is_(None),
        )
        return any(ts <= max(last, resolved or last) for last, resolved in (await s.execute(query)).all())

    @staticmethod
    async def _row(s: AsyncSession, alert_id: int) -> AlertRow:
        row = await s.get(AlertRow, alert_id)
        if row is None:
            raise AlertNotFoundError(f"no alert {alert_id}")
        return row

    def _close(
        self, s: AsyncSession, row: AlertRow, ts: int | None, actor: str, action: str, detail: dict[str, Any]
    ) -> None:
        row.state, row.open_key, row.resolved_at_ms = "resolved", None, self.now_ms()
        row.resolved_ts = ts if ts is not None else row.last_ts
        self._audit(s, row.id, actor, action, detail)

    def _audit(self, s: AsyncSession, alert_id: int, actor: str, action: str, detail: dict[str, Any]) -> None:
        s.add(AlertEventRow(alert_id=alert_id, at_ms=self.now_ms(), actor=actor, action=action, detail=detail))
