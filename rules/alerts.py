"""Alerts: one open alert per (rule, subject); what changed about it is an AlertChange."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

EVIDENCE_KEPT = 10


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class State(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Change(StrEnum):
    OPENED = "opened"
    REPEATED = "repeated"
    UPDATED = "updated"  # new evidence, confidence or severity; not a repeat
    RESOLVED = "resolved"


@dataclass
class Alert:
    rule: str
    subject: str
    site: str
    severity: Severity
    title: str
    first_ts: int
    last_ts: int
    state: State = State.OPEN
    count: int = 1
    escalation: int = 0
    grid: str | None = None
    building: str | None = None
    unit: str | None = None
    zone: str | None = None
    recipients: list[str] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    resolved_ts: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.subject)

    def add_evidence(self, item: dict[str, Any]) -> None:
        self.evidence.append(item)
        del self.evidence[:-EVIDENCE_KEPT]


@dataclass(frozen=True)
class AlertChange:
    """The alert as it stood right after the change (a snapshot, not the live alert)."""

    change: Change
    ts: int
    snapshot: dict[str, Any]

    @classmethod
    def of(cls, change: Change, ts: int, alert: Alert) -> "AlertChange":
        # Shallow: evidence items are never changed once added, so copying the lists is enough
        # (asdict's deep copy was most of the engine's time).
        snapshot = dict(alert.__dict__)
        snapshot["recipients"] = list(alert.recipients)
        snapshot["evidence"] = list(alert.evidence)
        return cls(change, ts, snapshot)

    def as_json(self) -> dict[str, Any]:
        """The replay's output line: rule, subject, state, severity, ts first, then the rest."""
        doc = dict(self.snapshot)
        return {
            "rule": doc.pop("rule"),
            "subject": doc.pop("subject"),
            "state": str(doc.pop("state")),
            "severity": str(doc.pop("severity")),
            "ts": self.ts,
            "change": self.change.value,
            **doc,
        }
