"""Every panel's query, expanded as Grafana expands it, against a real InfluxDB holding two hours of
a simulated estate (ingest and the rules service running), plus the rare events the simulator does
not play in two hours, sent as the devices would send them."""

import asyncio
import datetime as dt
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devices.estate import Estate
from grafana.boards import BOARDS
from grafana.macros import ALL, PanelQuery, expand_for_grafana, panel_queries, variables
from ingest.completeness import Completeness
from ingest.metrics import IngestMetrics
from rules.service import RulesService
from store.alert_copies import mirror_line
from store.alerts import AlertStore
from store.influx import Influx
from store.registry.db import Registry
from tests.support.http_recorder import http_recorder
from tests.support.ingest import IngestProcess, eventually, ingest_env, load_registry
from tests.support.pipeline import simulate
from tests.support.rules import Device, rules_settings
from tests.support.servers import Broker, InfluxServer, start_broker

SIM_SECONDS, SPEED = 30, 240  # two simulated hours of an evening
TAIL_SECONDS = 8
TAIL_MS = (60 - 1) * TAIL_SECONDS * 1000 + 5000  # ends 5 s behind the wall clock: nothing from the future
MAX_DATA_POINTS = 1000  # Grafana's default for a panel about as wide as the screen
BOARD_JSON = {name: make() for name, make in BOARDS.items()}
QUERIES = [q for board in BOARD_JSON.values() for q in panel_queries(board)]


@dataclass(frozen=True)
class Day:
    influxd: InfluxServer
    db: str
    estate: Estate
    from_ms: int
    to_ms: int


def _rare_events(devices: Device, estate: Estate, at_ms: int) -> None:
    """What a real estate sees now and then but two simulated hours may not: faults, denials,
    forced doors, and one message ingest must reject."""
    first = {t: next(d for d in estate.devices if d.type.value == t) for t in ("ev_charger", "smoke_sensor",
                                                                            "door_controller")}
    charger, smoke, door = first["ev_charger"].id, first["smoke_sensor"].id, first["door_controller"].id
    seq = iter(range(10_000_000, 10_001_000))
    events: list[tuple[str, str, dict[str, Any]]] = [
        ("ev_charger", charger, {"type": "fault", "port": 1, "code": "E-RELAY"}),
        ("ev_charger", charger, {"type": "session_stop", "port": 2, "session_id": "s-hot", "reason": "over_temperature",
                                 "energy_wh": 800.0, "duration_s": 3600.0}),
        ("smoke_sensor", smoke, {"type": "fault", "code": "chamber"}),
        ("smoke_sensor", smoke, {"type": "low_battery", "battery_pct": 9.0}),
        ("smoke_sensor", smoke, {"type": "test", "passed": True}),
        ("door_controller", door, {"type": "access", "method": "card", "granted": False}),
        # Residents mostly use cards and faces; two hours may bring no QR code or PIN entry.
        ("door_controller", door, {"type": "access", "method": "qr", "granted": True}),
        ("door_controller", door, {"type": "access", "method": "password", "granted": True}),
        ("door_controller", door, {"type": "forced_open"}),
        ("door_controller", door, {"type": "held_open", "open_s": 300.0}),
        ("door_controller", door, {"type": "tailgating", "persons": 3}),
    ]
    for i, (device_type, device, body) in enumerate(events):
        devices.send(device_type, device, "event", ts=at_ms + i * 1000, **{**body, "seq": next(seq)})
    devices.raw(f"estate/v1/{estate.site.id}/smoke_sensor/{smoke}/event", b"{not json")
    # Now, after the simulated hours: one sensor reports a fault, one car parks.
    now = int(time.time() * 1000)
    devices.send("smoke_sensor", smoke, "telemetry", seq=next(seq), ts=now, state="fault", smoke_obscuration_pct=0.0,
                 temp_c=21.0, battery_pct=80.0, rssi_dbm=-70.0)  # fmt: skip
    space = next(d.id for d in estate.devices if d.type.value == "space_sensor" and d.zone and d.zone.startswith("pk"))
    devices.send("space_sensor", space, "telemetry", seq=next(seq), ts=now, occupied=True, battery_pct=80.0)


def evening_start(estate: Estate) -> int:
    """The latest 17:00 (the estate's time) whose two hours are over: an evening is when every kind
    of device is busy, so the boards are judged on the same traffic whatever the hour of the run."""
    now = dt.datetime.now(estate.site.tz)
    start = now.replace(hour=17, minute=0, second=0, microsecond=0)
    if start + dt.timedelta(seconds=SIM_SECONDS * SPEED) > now:
        start -= dt.timedelta(days=1)
    return int(start.timestamp() * 1000)


async def _play(broker: Broker, influxd: InfluxServer, db: str, registry_url: str, tmp: Path, estate: Estate) -> None:
    start = evening_start(estate)
    end = start + SIM_SECONDS * SPEED * 1000
    with http_recorder() as hook:
        settings = rules_settings(
            broker, influxd.url, db, registry_url, tmp, estate, hook.url, rules_rebuild_s=0, rules_open_counts_s=1
        )
        async with RulesService(settings):
            await simulate(
                estate, broker, SIM_SECONDS, speed=SPEED, start_ms=start,
                incidents=("smoke_alarm", "sos", "blocked_fire_lane", "silent"), incident_delay_s=3,
            )  # fmt: skip
            # The last minutes up to now, for the current-state panels (they read their own window
            # before the dashboard's end): at speed 60 the estate's clock ends just behind the wall's.
            await simulate(
                estate, broker, TAIL_SECONDS, speed=60, start_ms=int(time.time() * 1000) - TAIL_MS,
                incidents=("smoke_alarm", "silent:radio-02"), incident_delay_s=1,
            )  # fmt: skip
            devices = Device(broker, estate.site.id, client_id="grafana-rare")
            try:
                _rare_events(devices, estate, end - 600_000)
            finally:
                devices.close()

            def stored(q: str) -> bool:
                return bool(influxd.query(db, q))

            assert await eventually(lambda: stored("SELECT * FROM door_controller_event WHERE persons = 3"), 30)
            assert await eventually(lambda: stored("SELECT * FROM smoke_sensor WHERE state = 'fault'"), 30)
            # Ingest's completeness check runs on wall-clock windows; run it over the simulated hours.
            async with Influx(influxd.url, db) as influx:
                check = Completeness(influx, IngestMetrics(), period_s=600)
                for window_end in range(start + 600_000, end + 1, 600_000):
                    await check.run_once(window_end)
            assert await eventually(lambda: stored("SELECT * FROM alerts WHERE \"rule\" = 'sos'"), 30)
            # A grid worker acknowledges an alert; the API writes its InfluxDB copy the same way.
            async with Registry(settings.db_url) as reg, Influx(influxd.url, db) as influx:
                store = AlertStore(reg)
                first = (await store.open_alerts())[0]
                acked = await store.acknowledge(first.id, "test-worker")
                await influx.write(mirror_line(acked, "acknowledged", store.now_ms()).encode(), precision="ns")
            assert await eventually(lambda: stored("SELECT * FROM alerts_open WHERE acknowledged > 0"), 10)
            assert await eventually(lambda: stored("SELECT * FROM ingest_stats WHERE points_written > 0"), 10)


@pytest.fixture(scope="module")
def day(influxd: InfluxServer, small: Estate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day]:
    tmp = tmp_path_factory.mktemp("grafana-day")
    broker = start_broker(tmp / "mosquitto")
    db = "grafana_day"
    influxd.create_database(db)
    registry_url = asyncio.run(load_registry(tmp / "registry.db", small))
    env = ingest_env(
        broker, influxd.url, db, registry_url, tmp, "ingest-grafana",
        ESTATEWATCH_INGEST_STATS_S="1",
    )  # fmt: skip
    ingest = IngestProcess(env, tmp / "ingest.log").start()
    start = evening_start(small)
    try:
        asyncio.run(_play(broker, influxd, db, registry_url, tmp, small))
        yield Day(influxd, db, small, start - 60_000, int(time.time() * 1000) + 60_000)
    finally:
        ingest.stop()
        broker.stop()


def _sql(day: Day, q: PanelQuery, values: dict[str, object]) -> str:
    """The query as Grafana sends it for the day's span: its interval, the panel's minimum and own
    window (a current-state panel's last minutes up to the day's end) honoured."""
    board = next(b for b in BOARD_JSON.values() if b["title"] == q.board)
    return expand_for_grafana(q, day.from_ms, day.to_ms, values, variables(board), MAX_DATA_POINTS)


def _run(day: Day, q: PanelQuery, values: dict[str, object]) -> list[dict[str, Any]]:
    return day.influxd.query(day.db, _sql(day, q, values))


def _series_lengths(day: Day, sql: str) -> list[int]:
    """Rows per series of the answer, as Grafana receives them."""
    data = urllib.parse.urlencode({"db": day.db, "q": sql, "epoch": "ms"}).encode()
    with urllib.request.urlopen(f"{day.influxd.url}/query", data=data, timeout=60) as r:
        result = json.load(r)["results"][0]
    assert "error" not in result, result
    return [len(s["values"]) for s in result.get("series", [])]


@pytest.mark.slow
@pytest.mark.parametrize("q", QUERIES, ids=[q.label for q in QUERIES])
def test_every_panel_query_returns_data(day: Day, q: PanelQuery) -> None:
    rows = _run(day, q, {"site": day.estate.site.id, "building": ALL, "grid": ALL})
    assert rows, f"{q.label}: no data for a simulated estate"


@pytest.mark.slow
@pytest.mark.parametrize("q", QUERIES, ids=[q.label for q in QUERIES])
def test_every_panel_query_runs_with_one_building_and_grid_chosen(day: Day, q: PanelQuery) -> None:
    building = day.estate.buildings[0]
    _run(day, q, {"site": day.estate.site.id, "building": [building.id], "grid": building.grid})


@pytest.mark.slow
@pytest.mark.parametrize("q", QUERIES, ids=[q.label for q in QUERIES])
def test_every_panel_returns_no_more_than_it_can_draw(day: Day, q: PanelQuery) -> None:
    """A series never holds more than twice Grafana's data points: the rest would be work for
    InfluxDB, the network and the browser that no pixel shows."""
    lengths = _series_lengths(day, _sql(day, q, {"site": day.estate.site.id, "building": ALL, "grid": ALL}))
    assert max(lengths, default=0) <= 2 * MAX_DATA_POINTS, f"{q.label}: {max(lengths)} rows in one series"
