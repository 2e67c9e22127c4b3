"""The boards checked without a Grafana: generated files current, uids unique and stable, the JSON
of the declared schema version, every variable defined, provisioning and compose consistent, and
every measurement, field and tag a query names one that ingest or the rules service writes."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devices.types import DeviceType
from grafana.boards import BOARDS
from grafana.build import DASHBOARDS, rendered
from grafana.macros import expand_for_grafana, panel_queries
from grafana.model import DATASOURCE, GRID_WIDTH, SCHEMA_VERSION
from ingest.completeness import by_type_lines, completeness_line
from ingest.metrics import IngestMetrics
from ingest.rejects import RejectCounts, Source, Stamps
from ingest.selfstats import SelfStats
from store.alert_copies import mirror_line, open_grid_lines, open_lines
from store.alerts import AlertView
from store.now_series import charging_load_line, devices_now_lines, smoke_signal_line
from store.series import TAG_FIELDS, TAG_NAMES, all_fields

ROOT = Path(__file__).parents[2]
BOARD_JSON = {name: json.loads(text) for name, text in rendered().items()}
DEVICE_TAGS = {"site", "device_type", "device_id", "building", "unit", "zone", "grid"} | {
    TAG_NAMES.get(t, t) for t in TAG_FIELDS
}


def test_the_dashboard_files_are_current() -> None:
    on_disk = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert on_disk == rendered(), "grafana/dashboards is stale: run `python -m grafana.build`"


def test_uids_are_unique_and_stable() -> None:
    uids = [b["uid"] for b in BOARD_JSON.values()]
    assert len(set(uids)) == len(uids) == len(BOARDS) == 9
    assert all(re.fullmatch(r"ew-[a-z]+", u) for u in uids)  # short and stable: links and bookmarks use them
    assert len({b["title"] for b in BOARD_JSON.values()}) == len(BOARD_JSON)


@pytest.mark.parametrize("name", sorted(BOARD_JSON))
def test_each_board_is_grafana_dashboard_json_of_its_schema_version(name: str) -> None:
    board: dict[str, Any] = BOARD_JSON[name]
    assert board["schemaVersion"] == SCHEMA_VERSION and board["editable"] is False
    assert board["time"]["to"] == "now" and board["refresh"]
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= GRID_WIDTH and pos["h"] > 0, p["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(set(refs)) == len(refs), p["title"]
        assert all(t["datasource"] == DATASOURCE and t["rawQuery"] for t in p["targets"])
        assert p["type"] in {"timeseries", "stat", "table", "bargauge", "barchart", "geomap", "state-timeline"}
    defined = {v["name"] for v in board["templating"]["list"]}
    for q in panel_queries(board):
        used = set(re.findall(r"\$(\w+)", q.query)) - {"timeFilter", "__interval"}
        assert used <= defined, f"{q.label} uses undefined variables {used - defined}"


def test_provisioning_matches_the_boards_and_compose() -> None:
    sources = yaml.safe_load((ROOT / "grafana/provisioning/datasources/influxdb.yaml").read_text())["datasources"]
    [source] = sources
    assert source["uid"] == DATASOURCE["uid"] and source["type"] == DATASOURCE["type"]
    assert source["jsonData"]["version"] == "InfluxQL" and source["jsonData"]["dbName"] == "estate"
    assert source["user"].startswith("${") and source["secureJsonData"]["password"].startswith("${")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["grafana"]["environment"]
    for ref in re.findall(r"\$\{(\w+)\}", yaml.safe_dump(source)):
        assert ref in env, f"the data source reads ${ref}, which compose does not give Grafana"


def _parse_line(line: str) -> tuple[str, set[str], set[str]]:
    """(measurement, tag keys, field keys) of a line-protocol line without escaped spaces."""
    head, fields, _ = line.split(" ")
    measurement, *tags = head.split(",")
    return measurement, {t.split("=")[0] for t in tags}, {f.split("=")[0] for f in fields.split(",")}


def _platform_schema() -> dict[str, set[str]]:
    """What ingest and the rules service write about themselves, from the code that writes it."""
    alert = AlertView(1, "s", "fire", "smk-1", "acknowledged", "critical", "t", 0, 1, 0, 0, None, "g01", "b001", None,
                      None, None, [], [], 0, 0, 1000, None)  # fmt: skip
    lines = [
        SelfStats(None, IngestMetrics(), "w", 10.0).line(0),  # type: ignore[arg-type]  # line() writes nothing
        completeness_line(("s", "smoke_sensor", "smk-1"), 1, 1, 1, 1, 0),
        *by_type_lines({("s", "smoke_sensor"): (1, 1)}, 0),
        *RejectCounts("w", 1.0, lambda entry: None, Stamps()).lines(
            {(Source("s", DeviceType.SMOKE_SENSOR, "smk-1"), "bad_json"): 3}
        ),
        mirror_line(alert, "acknowledged", 0),
        *open_lines("s", ["fire"], ["g01"], {}, 0),
        *open_grid_lines("s", ["g01"], {}, 0),
        *devices_now_lines("s", {("smoke_sensor", "g01"): (3, 1)}, 0),
        charging_load_line("s", "b001", "g01", 3500.0, 1, 2, 31.0, 0),
        smoke_signal_line("s", "b001", "g01", -70.0, 3, 0),
    ]
    out: dict[str, set[str]] = {}
    for line in lines:
        measurement, tags, fields = _parse_line(line)
        out.setdefault(measurement, set()).update(tags | fields)
    return out


def _schema() -> dict[str, set[str]]:
    schema = {m: set(f) | DEVICE_TAGS for m, f in all_fields().items()}
    schema.update(_platform_schema())
    return schema


QUERIES = [q for board in BOARD_JSON.values() for q in panel_queries(board)]


@pytest.mark.parametrize("q", QUERIES, ids=[q.label for q in QUERIES])
def test_queries_name_only_what_is_written(q: Any) -> None:
    schema = _schema()
    sql = re.sub(r'FROM "\w+"\."', 'FROM "', q.query)  # a retention policy's name is not a measurement
    measurements = re.findall(r'FROM "(\w+)"', sql)
    for pattern in re.findall(r"FROM /\^\(([\w|]+)\)\$/", sql):
        measurements += pattern.split("|")
    assert measurements, f"{q.label}: no measurement"
    unknown = [m for m in measurements if m not in schema]
    assert not unknown, f"{q.label}: no measurement {unknown} is written"
    aliases = set(re.findall(r'AS "(\w+)"', sql))
    allowed = set().union(*(schema[m] for m in measurements)) | aliases
    named = set(re.findall(r'"(\w+)"', sql)) - set(measurements)
    assert named <= allowed, f"{q.label}: {sorted(named - allowed)} not written to {measurements}"


@pytest.mark.parametrize("q", [q for q in QUERIES if q.now_window], ids=[q.label for q in QUERIES if q.now_window])
def test_a_current_state_panel_reads_the_same_whatever_the_time_picker_says(q: Any) -> None:
    """Its own window, not the picker's span: the query Grafana sends at 1 h and at 30 d is the same,
    so its cost cannot grow with the span (Grafana's relative-time panel option: ``timeFrom``)."""
    now = 1_800_000_000_000
    sent = {span: expand_for_grafana(q, now - span, now) for span in (3_600_000, 30 * 86_400_000)}
    assert len(set(sent.values())) == 1, sent
    assert re.fullmatch(r"\d+m", q.now_window or "") and f"time >= {now - _minutes(q.now_window)}ms" in sent[3_600_000]


def _minutes(window: str) -> int:
    return int(window[:-1]) * 60_000


def test_every_panel_reading_only_the_latest_value_has_its_own_window() -> None:
    """A panel that shows "now" (a last(), bottom() or top() not grouped by time) over a series that
    keeps coming gets a window of its own; the ones left read the span on purpose (tables of the
    latest events, counts over the span)."""
    over_span = {
        ("Charging", "Port faults"), ("Charging", "Sessions stopped, and stopped over temperature"),
        ("Access", "Latest door incidents"), ("Parking and fire lanes", "Long stays and blocked fire lanes (alerts)"),
        ("Patrol", "SOS"), ("Device health", "Silent devices (open alerts)"),
        ("Device health", "Devices with the most gaps"), ("Alerts", "Time to acknowledge per grid (mean)"),
        ("Alerts", "Alert changes by rule"), ("Alerts", "Latest alert changes"),
    }  # fmt: skip
    missing = [
        q.label
        for q in QUERIES
        if "GROUP BY time" not in q.query and not q.now_window and (q.board, q.panel) not in over_span
        and not q.panel.startswith("annotation")
    ]  # fmt: skip
    assert not missing, f"current-state panels that scan the span: {missing}"


# The others answer one row per series: latest values, counts over the span, LIMITed tables.
BUCKETED = [q for q in QUERIES if "GROUP BY time(" in q.query]


@pytest.mark.parametrize("q", BUCKETED, ids=[q.label for q in BUCKETED])
def test_no_series_can_hold_more_than_twice_the_points_grafana_draws(q: Any) -> None:
    """By construction, whatever the data: a series has one row per bucket, and Grafana's interval
    (span / 1,000 points, rounded, raised to the panel's minimum) never makes more than 2,000 of them,
    at any span from an hour to a month (test_panels checks the rows on data; bench boards on the
    full estate's day)."""
    from grafana.macros import grafana_interval_ms, panel_range

    for span_ms in (3_600_000, 86_400_000, 7 * 86_400_000, 30 * 86_400_000):
        start, end = panel_range(q, 0, span_ms)
        buckets = (end - start) / grafana_interval_ms(end - start, q.interval)
        assert buckets <= 2 * 1000, f"{q.label}: {buckets:.0f} buckets at a {span_ms // 3_600_000} h span"
