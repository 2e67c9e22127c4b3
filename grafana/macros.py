"""Grafana's InfluxQL macros and template variables, expanded the way Grafana 11's InfluxDB data
source expands them (public/app/plugins/datasource/influxdb: interpolateQueryExpr, getTimeFilter),
so every panel's query can run against a real InfluxDB without Grafana (the tests and
``estatewatch bench boards``)."""

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

ALL = object()  # the variable's "All" option
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|[\]{}/]")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")


def regex_escape(value: str) -> str:
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def _format(value: object, variable: Mapping[str, Any]) -> str:
    """A variable's value in a query: multi-value and All variables become regexes, escaped."""
    if value is ALL:
        all_value = variable.get("allValue")
        return str(all_value) if all_value else ".*"
    multi = variable.get("multi") or variable.get("includeAll")
    if isinstance(value, list):
        return "(" + "|".join(regex_escape(v) for v in value) + ")"
    return regex_escape(str(value)) if multi else str(value)


def expand(
    query: str,
    *,
    from_ms: int,
    to_ms: int,
    interval: str,
    values: Mapping[str, object],
    variables: Mapping[str, Mapping[str, Any]],
) -> str:
    query = query.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    query = query.replace("$__interval_ms", str(_interval_ms(interval))).replace("$__interval", interval)

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"query uses ${name}, which the dashboard does not define")
        return _format(values[name], variables[name])

    return _VARIABLE.sub(sub, query)


def _interval_ms(interval: str) -> int:
    number, unit = int(interval[:-1]), interval[-1]
    return number * {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]


# Grafana's roundInterval (packages/grafana-data/src/datetime/rangeutil.ts): (below, rounded to), ms.
_ROUNDING = [(15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
             (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
             (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
             (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000),
             (32400000, 21600000), (86400000, 43200000), (604800000, 86400000), (1814400000, 604800000),
             (3628800000, 2592000000)]  # fmt: skip


def grafana_interval_ms(span_ms: int, min_interval: str | None = None, max_data_points: int = 1000) -> int:
    """``$__interval`` as Grafana computes it: the span over the data points, rounded, and never
    below the panel's minimum interval (calculateInterval)."""
    raw = span_ms / max_data_points
    rounded = next((to for below, to in _ROUNDING if raw < below), 31_536_000_000)
    return max(rounded, _interval_ms(min_interval) if min_interval else 0)


@dataclass(frozen=True)
class PanelQuery:
    board: str
    panel: str
    ref: str
    query: str
    interval: str | None  # the panel's own minimum interval, when it has one
    now_window: str | None = None  # a current-state panel's own window (Grafana's timeFrom)

    @property
    def label(self) -> str:
        return f"{self.board} / {self.panel} / {self.ref}"


def panel_queries(board: Mapping[str, Any]) -> Iterator[PanelQuery]:
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield PanelQuery(
                board["title"], panel["title"], target["refId"], target["query"], panel.get("interval"),
                panel.get("timeFrom"),
            )  # fmt: skip
    for ann in board["annotations"]["list"]:
        if "query" in ann:
            yield PanelQuery(board["title"], f"annotation: {ann['name']}", "-", ann["query"], None)


def panel_range(q: PanelQuery, from_ms: int, to_ms: int) -> tuple[int, int]:
    """The range Grafana queries a panel over: the dashboard's, or with a relative-time override
    (``timeFrom``, minutes here) the last so many minutes up to the dashboard's end (now)."""
    if q.now_window is None:
        return from_ms, to_ms
    return to_ms - _interval_ms(q.now_window), to_ms


def expand_for_grafana(
    q: PanelQuery, from_ms: int, to_ms: int, values: Mapping[str, object] | None = None,
    board_variables: Mapping[str, Mapping[str, Any]] | None = None, max_data_points: int = 1000,
) -> str:  # fmt: skip
    """The query as Grafana sends it for a dashboard showing ``from_ms``..``to_ms``: the panel's own
    window and minimum interval honoured; variables "All" unless given."""
    start, end = panel_range(q, from_ms, to_ms)
    interval_ms = grafana_interval_ms(end - start, q.interval, max_data_points)
    given = values if values is not None else {"site": "s", "building": ALL, "grid": ALL}
    known = board_variables if board_variables is not None else {n: {"multi": True} for n in given}
    return expand(q.query, from_ms=start, to_ms=end, interval=f"{interval_ms // 1000}s", values=given,
                  variables=known)  # fmt: skip


def variables(board: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}
