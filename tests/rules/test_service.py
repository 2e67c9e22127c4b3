"""The rules service against a real broker, InfluxDB (fed by a real ingest worker) and registry:
restarts mid-incident neither lose nor repeat an alert; the simulator's incidents reach the notifier."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from devices.estate import Estate
from devices.types import DeviceType
from rules.service import RulesService
from rules.settings import RulesSettings
from stack.procs import free_port
from store.alerts import AlertStore
from store.checkpoints import Checkpoints
from store.registry.db import Registry
from tests.support import mqtt
from tests.support import rules as support_rules
from tests.support.http_recorder import Recorder, http_recorder
from tests.support.ingest import IngestProcess, eventually, until
from tests.support.pipeline import simulate
from tests.support.rules import Device
from tests.support.servers import Broker, InfluxServer

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries

DAY = 86_400_000
MIN = 60_000


@pytest.fixture
def hook() -> Iterator[Recorder]:
    with http_recorder() as recorder:
        yield recorder


@pytest.fixture
def rules_settings(
    broker: Broker,
    influxd: InfluxServer,
    influx_db: str,
    registry_url: str,
    tmp_path: Path,
    small: Estate,
    hook: Recorder,
) -> Callable[..., RulesSettings]:
    def make(**over: Any) -> RulesSettings:
        return support_rules.rules_settings(
            broker, influxd.url, influx_db, registry_url, tmp_path, small, hook.url, **over
        )

    return make


@asynccontextmanager
async def running(settings: RulesSettings) -> AsyncIterator[RulesService]:
    async with RulesService(settings) as svc:
        yield svc


@pytest.fixture
def devices(broker: Broker, small: Estate) -> Iterator[Device]:
    d = Device(broker, small.site.id)
    yield d
    d.close()


async def alerts(settings: RulesSettings, rule: str) -> list[Any]:
    async with Registry(settings.db_url) as reg:
        store = AlertStore(reg)
        rows = [v for v in await store.open_alerts() if v.rule == rule]
        trails = [(await store.get(v.id))[1] for v in rows]
    return list(zip(rows, trails, strict=True))


def stored(influxd: InfluxServer, db: str, measurement: str) -> int:
    rows = influxd.query(db, f'SELECT count("seq") FROM "{measurement}"')
    return int(rows[0]["count"]) if rows else 0  # type: ignore[call-overload]


def sent(hook: Recorder, rule: str) -> list[dict[str, Any]]:
    """What the webhook received about one rule (the gate's month-old read also makes it look silent)."""
    return [r.body["alerts"][0] for r in hook.requests if r.body["alerts"][0]["rule"] == rule]


def lane(devices: Device, start: int, end: int, occupied: bool) -> None:
    for ts in range(start, end, 30_000):
        devices.send("space_sensor", "sp-fl-01-1", "telemetry", ts=ts, occupied=occupied, battery_pct=80.0)


async def test_restart_in_the_middle_of_a_fire_lane_incident(
    rules_settings: Callable[..., RulesSettings],
    ingest_factory: Callable[..., IngestProcess],
    devices: Device,
    hook: Recorder,
    influxd: InfluxServer,
    influx_db: str,
) -> None:
    ingest_factory().start()
    settings = rules_settings()
    now = int(time.time() * 1000)
    start = now - 25 * MIN

    def lane_sent() -> list[dict[str, Any]]:  # the estate's never-heard devices go silent too: not counted
        return sent(hook, "fire_lane")

    async with running(settings):
        lane(devices, start, start + 13 * MIN, True)
        assert await eventually(lambda: len(lane_sent()) >= 2, 20), "voice stage, then the grid"
    [(alert, trail)] = await alerts(settings, "fire_lane")
    assert alert.escalation == 1 and [e.action for e in trail] == ["opened", "escalated"]
    assert await eventually(lambda: stored(influxd, influx_db, "space_sensor") >= 26, 20)
    sent_before = len(lane_sent())

    async with running(settings) as svc:  # rebuilt from InfluxDB: the same incident, not a new one
        assert svc.rebuilt["recent"] >= 26 and svc.rebuilt["new"] == 0, svc.rebuilt
        lane(devices, start + 13 * MIN, start + 21 * MIN, True)  # on to 20 minutes: escalated
        assert await eventually(lambda: len(lane_sent()) == sent_before + 1, 20)
        lane(devices, start + 21 * MIN, start + 24 * MIN, False)  # cleared for 3 minutes: resolved
        assert await eventually(lambda: len(lane_sent()) == sent_before + 2, 20)
    assert await alerts(settings, "fire_lane") == []
    # Nothing sent twice across the restart: exactly one message per change, each its own key.
    assert [a["action"] for a in lane_sent()] == ["opened", "escalated", "escalated", "resolved"]
    assert len({r.headers["idempotency-key"] for r in hook.requests}) == len(hook.requests)
    assert [a["severity"] for a in lane_sent()] == ["info", "warning", "critical", "critical"]


@pytest.mark.parametrize("checkpoint", [True, False], ids=["from-checkpoint", "from-influxdb-only"])
async def test_restart_in_the_middle_of_a_30_day_zombie_watch(
    checkpoint: bool,
    rules_settings: Callable[..., RulesSettings],
    ingest_factory: Callable[..., IngestProcess],
    devices: Device,
    hook: Recorder,
    influxd: InfluxServer,
    influx_db: str,
    small: Estate,
) -> None:
    ingest_factory().start()
    settings = rules_settings()
    now = int(time.time() * 1000)
    came_in = now - 30 * DAY + 4 * MIN  # 30 days are up in four minutes (within future_s of now)
    plate = "苏C3K7Q2"
    async with running(settings):
        read = {"type": "plate_read", "plate": plate, "direction": "in", "confidence": 0.95}
        devices.send("vehicle_gate", "vg-north", "event", ts=came_in, **read)
        devices.send("space_sensor", "sp-pk-s01-01", "telemetry", ts=now, occupied=True, battery_pct=80.0)
        assert await eventually(lambda: len(sent(hook, "zombie_car")) == 1, 20), "15 days: on the watchlist"
    [(watch, _)] = await alerts(settings, "zombie_car")
    assert watch.severity == "info" and watch.subject == plate
    assert await eventually(lambda: stored(influxd, influx_db, "vehicle_gate_event") == 1, 20)

    if not checkpoint:  # as after a kill -9 before the first checkpoint: months of InfluxDB instead
        async with Registry(settings.db_url) as reg:
            await Checkpoints(reg).drop(small.site.id, "zombie_car")
    async with running(settings) as svc:
        expected = {"cars_from_checkpoint": 1, "plates": 0} if checkpoint else {"cars_from_checkpoint": 0, "plates": 1}
        assert {k: svc.rebuilt[k] for k in expected} == expected and svc.rebuilt["new"] == 0, svc.rebuilt
        devices.send(
            "space_sensor", "sp-pk-s01-01", "telemetry", ts=now + 4 * MIN + 30_000, occupied=True, battery_pct=80.0
        )
        assert await eventually(lambda: len(sent(hook, "zombie_car")) == 2, 20)
    [(verify, trail)] = await alerts(settings, "zombie_car")
    assert verify.id == watch.id and verify.severity == "warning" and verify.escalation == 1
    assert [e.action for e in trail] == ["opened", "escalated"]
    assert [m["action"] for m in sent(hook, "zombie_car")] == ["opened", "escalated"]


async def test_the_simulators_smoke_alarm_reaches_the_robot_radios_and_influxdb(
    rules_settings: Callable[..., RulesSettings],
    broker: Broker,
    small: Estate,
    hook: Recorder,
    influxd: InfluxServer,
    influx_db: str,
) -> None:
    settings = rules_settings(rules_rebuild_s=0)
    listener, heard = mqtt.subscribe(broker.port, f"estate/v1/{small.site.id}/#", client_id="test-radio")
    try:
        async with running(settings):
            await simulate(small, broker, 8, speed=1, incidents=("smoke_alarm:smk-b001-u1-101",), incident_delay_s=2)
            assert await eventually(lambda: any(r.body["alerts"][0]["rule"] == "fire" for r in hook.requests), 20)
            assert heard.wait_for(lambda r: any("/radio/" in t and t.endswith("/command") for t in r.topics()), 10)
    finally:
        mqtt.stop(listener)
    fire = next(r.body["alerts"][0] for r in hook.requests if r.body["alerts"][0]["rule"] == "fire")
    assert fire["severity"] == "critical" and fire["subject"] == "smk-b001-u1-101" and fire["mobiles"]
    assert fire["link"].startswith("http://estate.example/page/alerts/")
    alert_topics = [t for t in heard.topics() if "/alerts/" in t]
    assert any(t.endswith("/fire/change") for t in alert_topics)
    rows = influxd.query(influx_db, "SELECT * FROM alerts WHERE \"rule\" = 'fire'")
    assert rows and rows[0]["severity"] == "critical"


def test_a_bad_rules_config_stops_the_command_with_its_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  fire_lane:\n    voice_after_s: -5\n")
    out = subprocess.run(
        [sys.executable, "-m", "estatewatch", "rules", "run", "--rules-config", str(bad), "--rules-metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "ESTATEWATCH_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"},
    )
    assert out.returncode != 0 and "line 3" in out.stderr and "voice_after_s" in out.stderr, out.stderr


async def test_a_registry_failure_stops_the_engine_and_loses_no_alert(
    rules_settings: Callable[..., RulesSettings], devices: Device, hook: Recorder
) -> None:
    settings = rules_settings(rules_rebuild_s=0)
    alarm = {"type": "alarm", "smoke_obscuration_pct": 12.0, "temp_c": 40.0}
    async def sql(statement: str) -> None:
        engine = create_async_engine(settings.db_url)
        async with engine.begin() as conn:
            await conn.exec_driver_sql(statement)
        await engine.dispose()

    async with running(settings) as svc:
        await sql("ALTER TABLE alert_events RENAME TO alert_events_away")  # the registry loses a table under it
        devices.send("smoke_sensor", "smk-b001-u1-101", "event", ts=int(time.time() * 1000), **alarm)
        assert await eventually(lambda: not svc.accepting, 10), "it stops instead of carrying on"
    assert sent(hook, "fire") == []
    await sql("ALTER TABLE alert_events_away RENAME TO alert_events")
    async with running(settings):  # the table is back; the broker redelivers the unacknowledged alarm
        assert await eventually(lambda: len(sent(hook, "fire")) == 1, 20)


async def test_an_unacknowledged_alarm_escalates_to_the_next_role(
    rules_settings: Callable[..., RulesSettings], devices: Device, hook: Recorder, small: Estate, tmp_path: Path
) -> None:
    config = tmp_path / "escalate.yaml"
    config.write_text(
        "notify:\n  ack_timeouts_s: {critical: [1]}\n  ack_escalate_to: [community_police]\n  channels:\n"
        f"    - {{name: hook, kind: webhook, url: '{hook.url}/alerts', min_severity: info}}\n"
    )
    settings = rules_settings(rules_rebuild_s=0, rules_config=config)
    alarm = {"type": "alarm", "smoke_obscuration_pct": 12.0, "temp_c": 40.0}
    async with running(settings):
        devices.send("smoke_sensor", "smk-b001-u1-101", "event", ts=int(time.time() * 1000), **alarm)
        assert await eventually(lambda: [m["action"] for m in sent(hook, "fire")] == ["opened", "escalated"], 20)
    police = next(c.mobile for c in small.contacts if c.role == "community_police")
    opened, escalated = sent(hook, "fire")
    assert police not in opened["mobiles"] and police in escalated["mobiles"]
    [(alert, trail)] = await alerts(settings, "fire")
    assert alert.ack_escalations == 1 and [e.action for e in trail] == ["opened", "escalated"]


async def test_engineers_changes_through_the_api_apply_without_a_restart(
    rules_settings: Callable[..., RulesSettings],
    broker: Broker,
    influxd: InfluxServer,
    influx_db: str,
    registry_url: str,
    tmp_path: Path,
    devices: Device,
    small: Estate,
) -> None:
    from tests.support.api import api_settings, make_tokens, running_api

    tokens = await make_tokens(registry_url)
    settings = rules_settings(rules_settings_poll_s=0.2, rules_rebuild_s=0)
    api_cfg = api_settings(broker, influxd.url, influx_db, registry_url, tmp_path)
    async with running(settings) as svc, running_api(api_cfg) as api, api.client(tokens.engineer) as c:
        r = await c.put("/api/v1/sites/small/rules/plate-whitelist", json={"plates": ["苏C12000"]})
        assert r.status_code == 200, r.text
        shift = {"worker": "w01b", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                 "start": "00:00", "end": "23:59"}  # fmt: skip
        assert (await c.put("/api/v1/sites/small/grids/g01/roster", json={"roster": [shift]})).status_code == 200
        assert await eventually(lambda: "苏C12000" in svc.engine.ctx.config.rules.fire_lane.exempt_plates, 10)
        now = int(time.time() * 1000)
        assert await eventually(lambda: svc.engine.ctx.grid_workers("g01", now) == ["worker:w01b"], 10)

        def block(plate: str, start: int) -> None:
            devices.send("camera", "cam-fl-01", "event", ts=start, type="zone_occupied", zone="fl-01",
                         object_kind="car", plate=plate, confidence=0.95)  # fmt: skip
            lane(devices, start, start + 7 * MIN, True)
            devices.send("camera", "cam-fl-01", "event", ts=start + 7 * MIN, type="zone_cleared", zone="fl-01")
            lane(devices, start + 7 * MIN + 1000, start + 11 * MIN, False)

        block("苏C12000", now - 30 * MIN)  # whitelisted through the API: nothing
        block("苏C88A21", now - 15 * MIN)  # anyone else: the grid hears of it
        async with Registry(settings.db_url) as reg:
            for _ in range(100):
                book, _ = await AlertStore(reg).search(rule="fire_lane")
                if book and book[0].state == "resolved":
                    break
                await asyncio.sleep(0.2)
    assert [a.subject for a in book] == ["fl-01"] and "苏C88A21" in book[0].title
    assert "worker:w01b" in book[0].recipients and "worker:w01a" not in book[0].recipients


async def test_a_registered_device_that_never_sends_is_silent_and_stays_so_after_a_restart(
    rules_settings: Callable[..., RulesSettings], devices: Device, registry_url: str
) -> None:
    """A device registered through the registry (the API's way) that never says a word goes silent
    a window after the engine expects it; a restart keeps it silent; disabling it takes it out."""
    from store.devices import DeviceAdmin

    async with Registry(registry_url) as reg:
        await DeviceAdmin(reg).register(
            "small", "smk-quiet-1", DeviceType.SMOKE_SENSOR, building="b002", unit=None, floor=None, zone=None,
            interval_s=1, vendor="acme", label=None, username="small.smk-quiet-1",
        )  # fmt: skip
    settings = rules_settings(rules_settings_poll_s=0.3)

    def talk() -> None:  # another device keeps the engine's (event-time) clock moving
        devices.send("radio", "radio-01", "telemetry", ts=int(time.time() * 1000), lat=34.24, lon=117.23,
                     accuracy_m=5.0, speed_m_s=0.0, battery_pct=80.0)  # fmt: skip

    async def quiet_listed() -> list[str]:
        found = [a for a, _ in await alerts(settings, "device_silent") if a.subject == "b002"]
        return list(found[0].evidence[-1].get("silent", [])) if found else []

    async def until_listed(want: bool) -> bool:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            talk()
            if ("smk-quiet-1" in await quiet_listed()) == want:
                return True
            await asyncio.sleep(0.3)
        return False

    async with running(settings):
        assert await until_listed(True), "never heard, and not reported silent"
    async with running(settings):  # restarted: still silent, the same alert
        assert await until_listed(True)
        [(_, trail)] = [(a, t) for a, t in await alerts(settings, "device_silent") if a.subject == "b002"]
        assert [e.action for e in trail].count("opened") == 1
        async with Registry(registry_url) as reg:
            await DeviceAdmin(reg).set_enabled("small", "smk-quiet-1", False)
        assert await until_listed(False), "a disabled device is no longer expected"


async def test_an_alert_line_influxdb_refuses_does_not_hold_back_the_others(
    rules_settings: Callable[..., RulesSettings], influxd: InfluxServer, influx_db: str, registry_url: str
) -> None:
    """The InfluxDB copies go in batches, in order: one line refused for good (a field of another
    type in the same shard) is set aside as failed, and the lines queued after it are written."""
    from devices.alerts import Alert
    from store.alert_copies import INFLUX_CHANNEL
    from store.influx import Influx

    async with Influx(influxd.url, influx_db) as influx:  # ack_s as text, in the acknowledgement's shard
        await influx.write(f'alerts,site=small ack_s="not a number" {time.time_ns()}'.encode(), precision="ns")

    def fire(subject: str) -> Alert:
        return Alert.from_json({"rule": "fire", "subject": subject, "site": "small", "severity": "critical",
                                "title": f"Fire {subject}", "first_ts": 1000, "last_ts": 1000, "grid": "g01",
                                "building": "b001", "unit": "b001-u1", "zone": None, "recipients": [],
                                "evidence": []})  # fmt: skip

    async with Registry(registry_url) as reg:
        store = AlertStore(reg)
        first = await store.apply("opened", 1000, fire("smk-a"))
        assert first is not None
        await store.acknowledge(first.alert.id, "worker")  # its line carries ack_s: refused
        await store.apply("opened", 1000, fire("smk-b"))

        async def settled() -> bool:
            return all(state != "pending" for _, state, _ in await store.outbox.listing(INFLUX_CHANNEL))

        async with running(rules_settings()):
            assert await until(settled, 20)
        states = sorted((key.split(":")[1], state) for key, state, _ in await store.outbox.listing(INFLUX_CHANNEL))
    assert states == [("acknowledged", "failed"), ("opened", "sent"), ("opened", "sent")], states
    opened = influxd.query(influx_db, 'SELECT "subject" FROM "alerts" WHERE "action" = \'opened\'')
    assert {r["subject"] for r in opened} == {"smk-a", "smk-b"}


async def test_the_charging_load_waits_out_an_influxdb_outage_and_arrives_whole(
    rules_settings: Callable[..., RulesSettings], devices: Device, influx_db: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The engine's per-building minutes are history, not snapshots: while InfluxDB is away they
    wait, the service keeps running however many writes fail (its alerts do not need InfluxDB), and
    once InfluxDB is back every minute is there, with the ports' sum."""
    import logging

    from tests.support.servers import start_influx

    caplog.set_level(logging.WARNING, logger="estatewatch.rules")
    own = start_influx(tmp_path / "own-influxd")
    own.create_database(influx_db)
    start = (int(time.time() * 1000) - 20 * 60_000) // 60_000 * 60_000
    settings = rules_settings(rules_series_write_s=0.2, rules_rebuild_s=0).model_copy(update={"influx_url": own.url})
    try:
        async with running(settings) as svc:
            await asyncio.to_thread(own.stop)
            for minute in range(12):  # two ports of one pile, every 30 s of event time
                for half in (0, 30_000):
                    ts = start + minute * 60_000 + half
                    for port, watts in ((1, 3500.0), (2, 700.0)):
                        devices.send("ev_charger", "chg-b001-1", "telemetry", ts=ts, port=port, state="charging",
                                     voltage_v=220.0, current_a=watts / 220, power_w=watts, energy_wh=10.0,
                                     temp_c=30.0 + port)  # fmt: skip
            assert await eventually(lambda: len(svc._series_pending) >= 10, 30), "nothing derived"

            def failed_in_a_row(n: int) -> bool:
                return any(r.getMessage().startswith("derived-series failed") and f"({n} in a row)" in r.getMessage()
                           for r in caplog.records)  # fmt: skip

            # Well past the ten failures in a row that a job which gives up would survive.
            assert await eventually(lambda: failed_in_a_row(15), 30), "the writes did not keep failing"
            assert svc.failed is None, svc.failed
            await asyncio.to_thread(own.start)

            def minutes() -> list[dict[str, Any]]:
                return own.query(influx_db, 'SELECT "power_w", "ports", "temp_max_c" FROM "charging_load"')

            assert await eventually(lambda: len(minutes()) >= 10, 30), minutes()
        rows = minutes()
    finally:
        own.stop()
    stamps = sorted(int(str(r["time"])) for r in rows)
    assert stamps == list(range(stamps[0], stamps[-1] + 1, 60_000)), "a minute went missing"
    assert all(r["power_w"] == 4200.0 and r["ports"] == 2 and r["temp_max_c"] == 32.0 for r in rows), rows
