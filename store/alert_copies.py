"""The copies of an alert change that leave the registry: the MQTT copy (radios, apps, the API's
stream) and the InfluxDB line (Grafana's annotations and alert boards), as outbox items, plus the
``alerts_open`` counts the rules service writes for the boards' "open now"."""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from devices.alerts import SEVERITIES
from devices.topics import ESTATE_GRID, alerts_topic
from store.outbox import Item
from store.series import line

if TYPE_CHECKING:
    from store.alerts import AlertView

MQTT_CHANNEL = "mqtt"
INFLUX_CHANNEL = "influx"
ALERTS_MEASUREMENT = "alerts"
OPEN_MEASUREMENT = "alerts_open"
OPEN_BY_GRID_MEASUREMENT = "alerts_open_by_grid"  # the same counts summed over rules, per grid
OPEN_PERIOD_S = 60  # alerts_open's default period (the rules service's rules_open_counts_s)


def mirror_line(alert: "AlertView", action: str, ts_ms: int) -> str:
    """The alert's ``alerts`` point: one per change, stamped ``ts_ms`` plus the id's last digits in
    ns, so changes in one ms never overwrite each other."""
    tags = {"site": alert.site, "rule": alert.rule, "severity": alert.severity, "action": action,
            "grid": alert.grid, "building": alert.building}  # fmt: skip
    fields: dict[str, object] = {
        "alert_id": alert.id, "subject": alert.subject, "title": alert.title, "state": alert.state,
        "count": alert.count, "escalation": alert.escalation,
    }  # fmt: skip
    if alert.acknowledged_at_ms is not None:
        fields["ack_s"] = round((alert.acknowledged_at_ms - alert.opened_at_ms) / 1000, 3)
    return line(ALERTS_MEASUREMENT, tags, fields, ts_ms * 1_000_000 + alert.id % 1_000_000)


def copies(alert: "AlertView", action: str, marker: str, ts_ms: int) -> list[Item]:
    """The MQTT copy and the InfluxDB line of one change; ``marker`` makes their keys unique to it."""
    key = f"{alert.id}:{action}:{marker}"
    doc = {"action": action, **alert.as_json()}
    topic = alerts_topic(alert.site, alert.grid, alert.rule)
    return [
        (f"{key}:mqtt", MQTT_CHANNEL, alert.id, {"topic": topic, "payload": doc}),
        (f"{key}:influx", INFLUX_CHANNEL, alert.id, {"line": mirror_line(alert, action, ts_ms)}),
    ]


def open_lines(
    site: str, rules: Sequence[str], grids: Sequence[str], counts: Mapping[tuple[str, str, str, str], int], ts_ns: int
) -> list[str]:
    """``alerts_open`` points (ns stamps): every (rule, grid) each time, zeros included, so a board's
    last value is never a count that has since gone to zero."""
    lines = []
    for rule in sorted({*rules, *(k[0] for k in counts)}):
        for grid in sorted({*grids, ESTATE_GRID, *(k[1] for k in counts if k[0] == rule)}):
            mine = {k: n for k, n in counts.items() if k[0] == rule and k[1] == grid}
            fields: dict[str, object] = {sev: sum(n for k, n in mine.items() if k[2] == sev) for sev in SEVERITIES}
            fields |= {st: sum(n for k, n in mine.items() if k[3] == st) for st in ("open", "acknowledged")}
            lines.append(line(OPEN_MEASUREMENT, {"grid": grid, "rule": rule, "site": site}, fields, ts_ns))
    return lines


def open_grid_lines(
    site: str, grids: Sequence[str], counts: Mapping[tuple[str, str, str, str], int], ts_ns: int
) -> list[str]:
    """``alerts_open_by_grid`` points: open alerts per grid over every rule, zeros included (what a
    board's "open per grid" reads: one series per grid rather than a sum over rules per bucket)."""
    lines = []
    for grid in sorted({*grids, ESTATE_GRID, *(k[1] for k in counts)}):
        mine = {k: n for k, n in counts.items() if k[1] == grid}
        fields: dict[str, object] = {sev: sum(n for k, n in mine.items() if k[2] == sev) for sev in SEVERITIES}
        fields |= {st: sum(n for k, n in mine.items() if k[3] == st) for st in ("open", "acknowledged")}
        lines.append(line(OPEN_BY_GRID_MEASUREMENT, {"grid": grid, "site": site}, fields, ts_ns))
    return lines
