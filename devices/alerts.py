"""The alert, in one place: its severities, states, the actions an alert's history records, the
rules that raise one, and the alert itself as the rules engine keeps it (``Alert``) and hands it on
(``AlertChange``: a copy, as it stood right after the change). The store keeps the same alert
(``store/alerts.py``'s ``AlertView`` adds its id and who acted); the API serves that.

One open alert per (site, rule, subject).
"""

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Evidence items an alert keeps (the engine and the registry alike): the newest.
EVIDENCE_KEPT = 20


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class State(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


SEVERITIES = tuple(s.value for s in Severity)


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


class Change(StrEnum):
    """What the engine says happened to an alert."""

    OPENED = "opened"
    REPEATED = "repeated"
    UPDATED = "updated"  # new evidence, confidence or severity; not a repeat
    RESOLVED = "resolved"


class Action(StrEnum):
    """What an alert's history records (and its copies carry): the engine's changes as the alert
    book applied them, and people's actions."""

    OPENED = "opened"
    REOPENED = "reopened"  # a repeat after a person resolved it while the condition went on
    REPEATED = "repeated"
    UPDATED = "updated"
    ESCALATED = "escalated"  # a higher severity or stage, or nobody acknowledged in time
    RESOLVED = "resolved"
    ACKNOWLEDGED = "acknowledged"
    ASSIGNED = "assigned"


# Actions that reach people (robots, radios, speakers); the rest are copies for boards and apps.
NOTIFY_ACTIONS = frozenset({Action.OPENED, Action.REOPENED, Action.ESCALATED})


class Rule(StrEnum):
    """Every rule that raises alerts (and the ids they go by in settings, topics and boards)."""

    FLYING_LEAD = "flying_lead"
    FIRE_LANE = "fire_lane"
    ZOMBIE_CAR = "zombie_car"
    DEVICE_SILENT = "device_silent"
    INVALID_PAYLOADS = "invalid_payloads"
    FIRE = "fire"
    SMOKE_MAINTENANCE = "smoke_maintenance"
    SOS = "sos"
    CHARGER_OVERTEMP = "charger_overtemp"
    CHARGER_FAULT = "charger_fault"
    CHARGER_OVERLOAD = "charger_overload"
    DOOR_HELD_OPEN = "door_held_open"
    DOOR_FORCED = "door_forced"
    TAILGATING = "tailgating"


# Who an alert reaches: "worker:<id>", "contact:<role>", "radio:<device>", "speaker:<camera>".
RECIPIENT_KINDS = ("worker", "contact", "radio", "speaker")


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

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Alert":
        """An alert from its JSON form (as ``AlertChange.as_json`` and the store's copies write it)."""
        fields = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        fields["severity"], fields["state"] = Severity(doc["severity"]), State(doc.get("state", "open"))
        return cls(**fields)

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.subject)

    def add_evidence(self, item: dict[str, Any]) -> None:
        self.evidence.append(item)
        del self.evidence[:-EVIDENCE_KEPT]


@dataclass(frozen=True)
class AlertChange:
    """The alert as it stood right after the change (a copy, not the live alert)."""

    change: Change
    ts: int
    alert: Alert

    @classmethod
    def of(cls, change: Change, ts: int, alert: Alert) -> "AlertChange":
        # Shallow: evidence items are never changed once added, so copying the lists is enough
        # (asdict's deep copy was most of the engine's time).
        return cls(change, ts, dataclasses.replace(alert, recipients=list(alert.recipients),
                                                   evidence=list(alert.evidence)))  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        """The replay's output line: rule, subject, state, severity, ts first, then the rest."""
        doc = dict(self.alert.__dict__)
        return {
            "rule": doc.pop("rule"),
            "subject": doc.pop("subject"),
            "state": str(doc.pop("state")),
            "severity": str(doc.pop("severity")),
            "ts": self.ts,
            "change": self.change.value,
            **doc,
        }
