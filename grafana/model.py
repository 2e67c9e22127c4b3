"""Building blocks of Grafana dashboard JSON (schema version 39, Grafana 11) for InfluxQL panels.

Only what the boards use: raw InfluxQL targets, a few panel kinds laid out left to right, query
template variables, and annotations from the ``alerts`` measurement.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 39
DATASOURCE = {"type": "influxdb", "uid": "estatewatch-influxdb"}
GRID_WIDTH = 24

# Filters every panel composes; Grafana formats a multi-value or All variable as a regex.
SITE = '"site" =~ /^$site$/'
BUILDING = '"building" =~ /^$building$/'
GRID = '"grid" =~ /^$grid$/'

Format = Literal["time_series", "table"]


@dataclass(frozen=True)
class Query:
    sql: str
    alias: str = ""
    format: Format = "time_series"

    def target(self, ref: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "refId": ref,
            "datasource": DATASOURCE,
            "query": self.sql,
            "rawQuery": True,
            "resultFormat": self.format,
        }
        if self.alias:
            out["alias"] = self.alias
        return out


@dataclass
class Panel:
    kind: str  # timeseries, stat, table, barchart, geomap, bargauge, piechart
    title: str
    queries: list[Query]
    width: int = 12
    height: int = 8
    unit: str | None = None
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    transformations: list[dict[str, Any]] = field(default_factory=list)
    interval: str | None = None
    # A current-state panel's own window ("11m": the last 11 minutes, whatever the time picker
    # says; Grafana's "relative time" panel option), so its cost never grows with the span.
    now_window: str | None = None


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    query: str
    multi: bool = True

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": self.query,
            "definition": self.query,
            "refresh": 2,  # on time range change: new buildings appear without a reload
            "sort": 1,
            "multi": self.multi,
            "includeAll": self.multi,
            "allValue": ".*" if self.multi else None,
            "current": {"text": "All", "value": "$__all"} if self.multi else {},
            "options": [],
            "hide": 0,
        }


SITE_VAR = Variable("site", "Site", 'SHOW TAG VALUES FROM "device_status" WITH KEY = "site"', multi=False)
BUILDING_VAR = Variable(
    "building", "Building", f'SHOW TAG VALUES FROM "smoke_sensor" WITH KEY = "building" WHERE {SITE}'
)
GRID_VAR = Variable(
    "grid", "Grid", f'SHOW TAG VALUES FROM /^(smoke_sensor|space_sensor)$/ WITH KEY = "grid" WHERE {SITE}'
)


@dataclass(frozen=True)
class Annotation:
    name: str
    query: str
    color: str = "red"

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "datasource": DATASOURCE,
            "enable": True,
            "iconColor": self.color,
            "query": self.query,
            "textColumn": "title",
            "tagsColumn": "rule,severity",
        }


def alert_annotation(rules_regex: str = ".*", name: str = "Alerts opened") -> Annotation:
    return Annotation(
        name,
        f'SELECT "title", "subject" FROM "alerts" WHERE {SITE} AND "action" = \'opened\' '
        f'AND "rule" =~ /^({rules_regex})$/ AND $timeFilter',
    )


def _panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"noValue": "0" if p.kind == "stat" else "no data", **p.defaults}
    if p.unit:
        defaults["unit"] = p.unit
    out: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "targets": [q.target(chr(ord("A") + i)) for i, q in enumerate(p.queries)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": p.options,
    }
    if p.transformations:
        out["transformations"] = p.transformations
    if p.interval:
        out["interval"] = p.interval
    if p.now_window:
        out["timeFrom"] = p.now_window
    return out


def dashboard(
    uid: str,
    title: str,
    panels: list[Panel],
    *,
    description: str,
    tags: list[str],
    variables: tuple[Variable, ...] = (SITE_VAR, BUILDING_VAR, GRID_VAR),
    annotations: tuple[Annotation, ...] = (),
    time_from: str = "now-24h",
    refresh: str = "1m",
) -> dict[str, Any]:
    laid: list[dict[str, Any]] = []
    x = y = row_height = 0
    for pid, p in enumerate(panels, start=1):
        if x + p.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        laid.append(_panel_json(p, pid, x, y))
        x += p.width
        row_height = max(row_height, p.height)
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["estatewatch", *tags],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "refresh": refresh,
        "templating": {"list": [v.json() for v in variables]},
        "annotations": {"list": [builtin, *(a.json() for a in annotations)]},
        "links": [
            {"type": "dashboards", "tags": ["estatewatch"], "asDropdown": True, "title": "EstateWatch boards"}
        ],
        "panels": laid,
    }
