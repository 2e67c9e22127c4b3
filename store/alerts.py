"""The alert book in the registry: the rules engine's changes applied idempotently, people's actions
(acknowledge, resolve, assign) with an audit trail, unacknowledged escalation, and with every change
its copies queued in the outbox in the same transaction (``store/outbox.py``).

Applying is idempotent so that a restarted engine, which replays recent history to rebuild its
state, can hand the store every change again: a change the store already reflects does nothing and
notifies nobody.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devices.alerts import EVIDENCE_KEPT, Action, Alert, Severity, State, severity_rank
from devices.topics import ESTATE_GRID
from store.alert_copies import copies
from store.outbox import Item, Outbox
from store.registry.db import Registry, retrying
from store.registry.schema import AlertEventRow, AlertRow

RULES_ACTOR = "rules"


class AlertNotFoundError(LookupError):
    pass


class AlertStateError(ValueError):
    """The action does not apply to the alert as it stands (acknowledging a resolved alert)."""


@dataclass(frozen=True, slots=True)
class AlertView:
    """An alert as the registry holds it: the engine's alert, with its id, assignee and the times
    people acted. What the API serves and every copy carries."""

    id: int
    site: str
    rule: str
    subject: str
    state: Literal["open", "acknowledged", "resolved"]
    severity: Literal["info", "warning", "critical"]
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
            r.id, r.site_id, r.rule, r.subject, r.state, r.severity, r.title, r.escalation, r.count,  # type: ignore[arg-type]
            r.first_ts, r.last_ts, r.resolved_ts, r.grid_id, r.building_id, r.unit_id, r.zone_id, r.assignee,
            list(r.recipients), list(r.evidence), r.ack_escalations, r.opened_at_ms, r.acknowledged_at_ms,
            r.resolved_at_ms,
        )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def as_alert(self) -> Alert:
        """The engine's alert (after a restart, the rules own the open ones again)."""
        return Alert(
            rule=self.rule, subject=self.subject, site=self.site, severity=Severity(self.severity), title=self.title,
            first_ts=self.first_ts, last_ts=self.last_ts, state=State(self.state), count=self.count,
            escalation=self.escalation, grid=self.grid, building=self.building, unit=self.unit, zone=self.zone,
            recipients=list(self.recipients), evidence=list(self.evidence),
        )  # fmt: skip


# AlertView's fields, in order, as columns.
_VIEW_COLUMNS = (
    AlertRow.id, AlertRow.site_id, AlertRow.rule, AlertRow.subject, AlertRow.state, AlertRow.severity, AlertRow.title,
    AlertRow.escalation, AlertRow.count, AlertRow.first_ts, AlertRow.last_ts, AlertRow.resolved_ts, AlertRow.grid_id,
    AlertRow.building_id, AlertRow.unit_id, AlertRow.zone_id, AlertRow.assignee, AlertRow.recipients,
    AlertRow.evidence, AlertRow.ack_escalations, AlertRow.opened_at_ms, AlertRow.acknowledged_at_ms,
    AlertRow.resolved_at_ms,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at_ms: int
    actor: str
    action: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one engine change did; ``notify`` says whether people should hear of it."""

    alert: AlertView
    action: Action
    notify: bool


# The messages for people (robots, radios, speakers) a change brings, queued with it.
Notifications = Callable[[AlertView, Action], list[Item]]


def _merge_evidence(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = list(old)
    for item in new:
        if item not in out:
            out.append(item)
    return out[-EVIDENCE_KEPT:]


def _engine_marker(v: AlertView) -> str:
    """What makes one engine change's copies unique (a replay of it makes the same)."""
    return f"{v.count}:{v.escalation}:{v.ack_escalations}:{v.state}"


class AlertStore:
    def __init__(self, registry: Registry, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self._clock = clock
        self.outbox = Outbox(registry, clock)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- the engine's changes --------------------------------------------------------------------
    async def apply(
        self, change: str, ts: int, alert: Alert, notifications: Notifications | None = None
    ) -> Applied | None:
        """Apply one engine change (``opened``, ``repeated``, ``updated``, ``resolved``); its copies
        (and, when people should hear of it, ``notifications``) are queued in the same transaction.
        Another writer of the same alert (a second rules service, a person) makes it wait or try
        again: one open alert per (site, rule, subject) whoever writes."""

        async def attempt() -> Applied | None:
            async with self.registry.transaction() as s:
                applied = await self._apply(s, change, ts, alert)
                if applied is not None:
                    items = copies(applied.alert, applied.action, _engine_marker(applied.alert), applied.alert.last_ts)
                    if applied.notify and notifications is not None:
                        items += notifications(applied.alert, applied.action)
                    await self.outbox.add(s, items)
                return applied

        return await retrying(attempt)

    async def _apply(self, s: AsyncSession, change: str, ts: int, alert: Alert) -> Applied | None:
        row = await self._open_row(s, alert.site, alert.rule, alert.subject)
        if change == "resolved":
            if row is None:
                return None
            self._close(s, row, ts, RULES_ACTOR, Action.RESOLVED, {"ts": ts, "evidence": alert.evidence[-1:]})
            return Applied(AlertView.of(row), Action.RESOLVED, True)
        if row is None:
            if await self._seen_closed(s, alert, ts):
                return None  # an episode that already ended, replayed after a restart
            row = self._insert(s, alert, ts)
            await s.flush()
            action = Action.OPENED if change == "opened" else Action.REOPENED
            self._audit(s, row.id, RULES_ACTOR, action, {"ts": ts, "severity": row.severity})
            return Applied(AlertView.of(row), action, True)
        if change == "opened" and alert.first_ts == row.first_ts:
            change = "updated"  # the same opening replayed after a restart: merge, do not count
        if change in ("opened", "repeated"):
            if ts <= row.last_ts and change == "repeated":
                return None  # replayed: already counted
            row.count += 1
            row.last_ts = max(row.last_ts, ts)
            row.evidence = _merge_evidence(row.evidence, alert.evidence[-1:])
            return Applied(AlertView.of(row), Action.REPEATED, False)
        return self._update(s, row, alert, ts)

    def _update(self, s: AsyncSession, row: AlertRow, alert: Alert, ts: int) -> Applied | None:
        higher = severity_rank(alert.severity) > severity_rank(row.severity)
        raised = higher or alert.escalation > row.escalation
        evidence = _merge_evidence(row.evidence, alert.evidence)
        recipients = sorted(set(row.recipients) | set(alert.recipients))
        if not raised and evidence == row.evidence and recipients == row.recipients and alert.title == row.title:
            return None
        if raised:
            self._audit(s, row.id, RULES_ACTOR, Action.ESCALATED,
                        {"ts": ts, "severity": alert.severity.value, "escalation": alert.escalation})  # fmt: skip
        if higher:
            row.severity, row.severity_at_ms = alert.severity.value, self.now_ms()
        row.escalation = max(row.escalation, alert.escalation)
        row.title, row.recipients, row.evidence = alert.title, recipients, evidence
        row.last_ts = max(row.last_ts, ts)
        return Applied(AlertView.of(row), Action.ESCALATED if raised else Action.UPDATED, raised)

    def _insert(self, s: AsyncSession, alert: Alert, ts: int) -> AlertRow:
        row = AlertRow(
            site_id=alert.site, rule=alert.rule, subject=alert.subject, open_key=f"{alert.rule}/{alert.subject}",
            state=State.OPEN.value, severity=alert.severity.value, title=alert.title[:300],
            escalation=alert.escalation, count=1, first_ts=alert.first_ts, last_ts=max(ts, alert.last_ts),
            grid_id=alert.grid, building_id=alert.building, unit_id=alert.unit, zone_id=alert.zone,
            recipients=list(alert.recipients), evidence=list(alert.evidence)[-EVIDENCE_KEPT:], ack_escalations=0,
            opened_at_ms=self.now_ms(),
        )  # fmt: skip
        s.add(row)
        return row

    # -- people ----------------------------------------------------------------------------------
    async def acknowledge(self, alert_id: int, actor: str, note: str | None = None) -> AlertView:
        return await retrying(lambda: self._acknowledge(alert_id, actor, note))

    async def _acknowledge(self, alert_id: int, actor: str, note: str | None) -> AlertView:
        async with self.registry.transaction() as s:
            row = await self._row(s, alert_id)
            if row.state != State.OPEN:
                raise AlertStateError(f"alert {alert_id} is {row.state}, only an open alert can be acknowledged")
            row.state, row.acknowledged_at_ms = State.ACKNOWLEDGED.value, self.now_ms()
            return await self._acted(s, row, actor, Action.ACKNOWLEDGED, {"note": note} if note else {})

    async def resolve(self, alert_id: int, actor: str, note: str | None = None) -> AlertView:
        return await retrying(lambda: self._resolve(alert_id, actor, note))

    async def _resolve(self, alert_id: int, actor: str, note: str | None) -> AlertView:
        async with self.registry.transaction() as s:
            row = await self._row(s, alert_id)
            if row.state == State.RESOLVED:
                raise AlertStateError(f"alert {alert_id} is already resolved")
            row.state, row.open_key, row.resolved_at_ms = State.RESOLVED.value, None, self.now_ms()
            row.resolved_ts = row.last_ts
            return await self._acted(s, row, actor, Action.RESOLVED, {"note": note} if note else {})

    async def assign(self, alert_id: int, assignee: str | None, actor: str) -> AlertView:
        return await retrying(lambda: self._assign(alert_id, assignee, actor))

    async def _assign(self, alert_id: int, assignee: str | None, actor: str) -> AlertView:
        async with self.registry.transaction() as s:
            row = await self._row(s, alert_id)
            if row.state == State.RESOLVED:
                raise AlertStateError(f"alert {alert_id} is resolved; reopen it by hand is not supported")
            row.assignee = assignee
            return await self._acted(s, row, actor, Action.ASSIGNED, {"assignee": assignee})

    async def _acted(
        self, s: AsyncSession, row: AlertRow, actor: str, action: Action, detail: dict[str, Any]
    ) -> AlertView:
        """A person's action: audited, and its copies queued with it (radios hear of it once the
        broker is there, however long it was away)."""
        event = self._audit(s, row.id, actor, action, detail)
        await s.flush()
        view = AlertView.of(row)
        await self.outbox.add(s, copies(view, action, f"e{event.id}", self.now_ms()))
        return view

    async def escalate_unacknowledged(
        self,
        timeouts_s: Mapping[str, Sequence[float]],
        recipients: Callable[[AlertView, int], list[str]],
        notifications: Notifications | None = None,
    ) -> list[AlertView]:
        """Raise open alerts nobody acknowledged in time: ``timeouts_s[severity][n]`` seconds after the
        alert reached its severity (its opening, or a raise since) is the (n+1)th escalation;
        ``recipients`` names who the next level reaches. Each escalation's copies and notifications
        are queued in the same transaction."""
        return await retrying(lambda: self._escalate_unacknowledged(timeouts_s, recipients, notifications))

    async def _escalate_unacknowledged(
        self,
        timeouts_s: Mapping[str, Sequence[float]],
        recipients: Callable[[AlertView, int], list[str]],
        notifications: Notifications | None,
    ) -> list[AlertView]:
        now = self.now_ms()
        raised: list[AlertView] = []
        first_steps = [steps[0] for steps in timeouts_s.values() if steps]
        if not first_steps:
            return raised
        # Only alerts old enough for the shortest first step are loaded: usually none at all.
        oldest = now - int(min(first_steps) * 1000)
        async with self.registry.transaction() as s:
            since = func.coalesce(AlertRow.severity_at_ms, AlertRow.opened_at_ms)
            # Locked: a second rules service escalating at the same moment waits, then sees the level raised.
            query = select(AlertRow).where(AlertRow.state == "open", since <= oldest).with_for_update()
            rows = (await s.scalars(query.order_by(AlertRow.id))).all()
            for row in rows:
                steps = timeouts_s.get(row.severity, ())
                if row.ack_escalations >= len(steps):
                    continue
                if now - (row.severity_at_ms or row.opened_at_ms) < steps[row.ack_escalations] * 1000:
                    continue
                row.ack_escalations += 1
                extra = recipients(AlertView.of(row), row.ack_escalations)
                row.recipients = sorted(set(row.recipients) | set(extra))
                waited = round((now - row.opened_at_ms) / 1000)
                self._audit(s, row.id, RULES_ACTOR, Action.ESCALATED,
                            {"level": row.ack_escalations, "unacknowledged_s": waited, "to": extra})  # fmt: skip
                view = AlertView.of(row)
                items = copies(view, Action.ESCALATED, _engine_marker(view), now)
                await self.outbox.add(s, items + (notifications(view, Action.ESCALATED) if notifications else []))
                raised.append(view)
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
        c = AlertRow
        conditions: list[ColumnElement[bool]] = [] if not states else [c.state.in_(states)]
        if grids is not None:
            conditions.append(c.grid_id.in_(grids))
        for value, column in ((site, c.site_id), (rule, c.rule), (subject, c.subject), (severity, c.severity),
                              (building, c.building_id)):  # fmt: skip
            if value is not None:
                conditions.append(column == value)
        if since_ms is not None:
            conditions.append(c.last_ts >= since_ms)
        if until_ms is not None:
            conditions.append(c.last_ts < until_ms)
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
            row = await self._row(s, alert_id, lock=False)
            query = select(AlertEventRow).where(AlertEventRow.alert_id == alert_id).order_by(AlertEventRow.id)
            events = (await s.scalars(query)).all()
            return AlertView.of(row), [AuditEntry(e.at_ms, e.actor, e.action, dict(e.detail)) for e in events]

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    async def _open_row(s: AsyncSession, site: str, rule: str, subject: str) -> AlertRow | None:
        # Locked to the end of the transaction (PostgreSQL; SQLite has one writer at a time anyway):
        # two writers of one alert take turns instead of overwriting each other's reading of it.
        query = select(AlertRow).where(AlertRow.site_id == site, AlertRow.open_key == f"{rule}/{subject}")
        return (await s.scalars(query.with_for_update())).first()

    @staticmethod
    async def _seen_closed(s: AsyncSession, alert: Alert, ts: int) -> bool:
        """A resolved alert of the same episode (same first_ts) that already covers ``ts``."""
        query = select(AlertRow.last_ts, AlertRow.resolved_ts).where(
            AlertRow.site_id == alert.site,
            AlertRow.rule == alert.rule,
            AlertRow.subject == alert.subject,
            AlertRow.first_ts == alert.first_ts,
            AlertRow.open_key.is_(None),
        )
        return any(ts <= max(last, resolved or last) for last, resolved in (await s.execute(query)).all())

    @staticmethod
    async def _row(s: AsyncSession, alert_id: int, *, lock: bool = True) -> AlertRow:
        row = await s.get(AlertRow, alert_id, with_for_update=lock)
        if row is None:
            raise AlertNotFoundError(f"no alert {alert_id}")
        return row

    def _close(
        self, s: AsyncSession, row: AlertRow, ts: int, actor: str, action: Action, detail: dict[str, Any]
    ) -> None:
        row.state, row.open_key, row.resolved_at_ms = State.RESOLVED.value, None, self.now_ms()
        row.resolved_ts = ts
        self._audit(s, row.id, actor, action, detail)

    def _audit(
        self, s: AsyncSession, alert_id: int, actor: str, action: Action, detail: dict[str, Any]
    ) -> AlertEventRow:
        event = AlertEventRow(alert_id=alert_id, at_ms=self.now_ms(), actor=actor, action=action.value, detail=detail)
        s.add(event)
        return event
