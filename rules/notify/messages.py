"""What a notification says: built once per alert change, rendered per channel when it is sent.

Recipients are names (``worker:w01a``, ``contact:property_manager``, ``radio:radio-01``,
``speaker:cam-fl-01``); the estate turns people into mobile numbers for robot mentions, and radios
and speakers into MQTT commands.
"""

from typing import Any

from devices.estate import Estate
from rules.config import NotifyChannel
from store.alerts import AlertView

SEVERITY_MARK = {"info": "ℹ️", "warning": "⚠️", "critical": "🚨"}
ACTION_WORD = {
    "opened": "New",
    "reopened": "Again",
    "escalated": "Escalated",
    "resolved": "Resolved",
}


class Directory:
    """Mobiles of grid workers and contacts, from the estate."""

    def __init__(self, estate: Estate) -> None:
        self.mobiles = {f"worker:{w.id}": w.mobile for g in estate.grids for w in g.workers}
        self.mobiles |= {f"contact:{c.role}": c.mobile for c in estate.contacts}

    def mobiles_of(self, recipients: list[str]) -> list[str]:
        return sorted({m for r in recipients if (m := self.mobiles.get(r))})


def message(alert: AlertView, action: str, directory: Directory, page_url: str | None) -> dict[str, Any]:
    """The channel-neutral message, stored in the outbox (so a restart sends exactly this)."""
    where = " ".join(p for p in (alert.building, alert.unit, alert.zone) if p)
    return {
        "alert_id": alert.id,
        "action": action,
        "rule": alert.rule,
        "subject": alert.subject,
        "severity": alert.severity,
        "title": alert.title,
        "where": where,
        "grid": alert.grid,
        "escalation": alert.escalation,
        "count": alert.count,
        "ts": alert.last_ts,
        "mobiles": directory.mobiles_of(alert.recipients) if action != "resolved" else [],
        "link": f"{page_url.rstrip('/')}/alerts/{alert.id}" if page_url else None,
    }


def wants(channel: NotifyChannel, alert: AlertView) -> bool:
    severities = ("info", "warning", "critical")
    if severities.index(alert.severity) < severities.index(channel.min_severity):
        return False
    return not channel.grids or alert.grid in channel.grids


def line(msg: dict[str, Any]) -> str:
    mark = SEVERITY_MARK.get(msg["severity"], "")
    text = f"{mark}[{ACTION_WORD.get(msg['action'], msg['action'])}] {msg['title']}"
    if msg["where"]:
        text += f" @ {msg['where']}"
    return text


def text(msg: dict[str, Any]) -> str:
    out = line(msg)
    if msg["count"] > 1:
        out += f" (x{msg['count']})"
    if msg["link"]:
        out += f"\n{msg['link']}"
    return out


def summary(msgs: list[dict[str, Any]]) -> tuple[str, str]:
    """(title, markdown) folding a burst into one message."""
    alerts = [m for m in msgs if not m.get("mention")]
    title = f"{len(alerts)} alert changes"
    rows = [f"- {line(m)}" + (f" [open]({m['link']})" if m["link"] else "") for m in alerts]
    return title, f"### {title}\n" + "\n".join(rows)
