import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.catalog import parse_payload
from devices.types import Channel, DeviceType
from ingest.completeness import Completeness, SeqTracker
from ingest.lines import encode
from ingest.metrics import IngestMetrics
from ingest.spool import Spool, SpoolFullError
from runtime.health import HealthServer
from store.influx import Influx
from store.registry.db import DeviceInfo
from store.retention import duration_ms
from store.series import all_fields, escape_key, escape_string
from tests.support.servers import InfluxServer

DEVICE = DeviceInfo("s1", "chg-1", DeviceType.EV_CHARGER, "b1", "b1-u1", None, None, "g1", 60, True)


def test_line_has_registry_tags_schema_types_and_the_devices_timestamp() -> None:
    [reading] = parse_payload(
        DeviceType.EV_CHARGER,
        Channel.TELEMETRY,
        b'{"ts":1764590400000,"seq":90,"port":2,"state":"charging","voltage_v":221,'
        b'"current_a":0.99,"power_w":219.5,"energy_wh":310,"temp_c":35}',
    )  # type: ignore[misc]
    line = encode(DEVICE, Channel.TELEMETRY, reading)
    assert line == (
        "ev_charger,building=b1,device_id=chg-1,device_type=ev_charger,grid=g1,port=2,site=s1,unit=b1-u1 "
        'seq=90i,state="charging",voltage_v=221.0,current_a=0.99,power_w=219.5,energy_wh=310.0,temp_c=35.0 '
        "1764590400000000090"  # the device's ms, the seq below it
    )


def test_numbers_are_floats_unless_the_schema_says_integer() -> None:
    kinds = all_fields()
    assert kinds["ev_charger"]["power_w"] == "float"
    assert kinds["ev_charger"]["seq"] == "int"
    assert kinds["door_controller_event"]["persons"] == "int"
    assert kinds["door_controller_event"]["granted"] == "bool"
    assert "port" not in kinds["ev_charger"], "port is a tag"


@given(st.text(max_size=50))
def test_escaping_keeps_every_string_inside_its_token(text: str) -> None:
    key = escape_key(text)
    # No unescaped separator survives: every , = space is preceded by a backslash.
    i = 0
    while i < len(key):
        if key[i] == "\\":
            i += 2
            continue
        assert key[i] not in ", =\n"
        i += 1
    quoted = escape_string(text)
    inner = quoted[1:-1]
    assert "\n" not in inner
    j = 0
    while j < len(inner):
        if inner[j] == "\\":
            j += 2
            continue
        assert inner[j] != '"'
        j += 1


async def test_escaped_lines_round_trip_through_influxdb(influxd: InfluxServer, influx_db: str) -> None:
    # Backslashes never reach a tag: ids cannot contain them (InfluxDB 1.x keeps an escaping backslash).
    nasty = DeviceInfo('s"1', "a,b=c d", DeviceType.DOOR_CONTROLLER, "b 1", "u=1", None, None, "g,1", 60, True)
    [event] = parse_payload(
        DeviceType.DOOR_CONTROLLER,
        Channel.EVENT,
        b'{"ts":1764590400000,"seq":1,"type":"access","method":"card","granted":true,"credential":"x_y-z"}',
    )  # type: ignore[misc]
    async with Influx(influxd.url, influx_db) as db:
        await db.write(encode(nasty, Channel.EVENT, event).encode(), precision="ns")
    rows = influxd.query(influx_db, "SELECT * FROM door_controller_event")
    assert len(rows) == 1
    assert (rows[0]["site"], rows[0]["device_id"], rows[0]["building"], rows[0]["unit"], rows[0]["grid"]) == (
        's"1',
        "a,b=c d",
        "b 1",
        "u=1",
        "g,1",
    )


async def test_two_readings_in_one_millisecond_stay_two_points(influxd: InfluxServer, influx_db: str) -> None:
    gate = DeviceInfo("s1", "vg-1", DeviceType.VEHICLE_GATE, None, None, None, None, "g1", 60, True)
    reads = parse_payload(
        DeviceType.VEHICLE_GATE,
        Channel.EVENT,
        (
            '[{"ts":1764590400000,"seq":7,"type":"plate_read","plate":"苏C12345","direction":"in","confidence":0.9},'
            '{"ts":1764590400000,"seq":8,"type":"plate_read","plate":"苏C54321","direction":"in","confidence":0.9}]'
        ).encode(),
    )
    assert isinstance(reads, list)
    body = "\n".join(encode(gate, Channel.EVENT, r) for r in reads).encode()
    async with Influx(influxd.url, influx_db) as db:
        await db.write(body, precision="ns")
        await db.write(body, precision="ns")  # a redelivery: overwrites, adds nothing
    rows = influxd.query(influx_db, "SELECT plate, seq FROM vehicle_gate_event")
    assert sorted((r["seq"], r["plate"], r["time"]) for r in rows) == [
        (7, "苏C12345", 1764590400000),
        (8, "苏C54321", 1764590400000),
    ]


def test_seq_tracker_tells_duplicates_from_late_arrivals() -> None:
    t = SeqTracker()
    assert [t.seen_before("s", "d", n) for n in (1, 2, 4)] == [False, False, False]
    assert t.seen_before("s", "d", 3) is False  # late, not a duplicate
    assert t.seen_before("s", "d", 3) is True
    assert t.seen_before("s", "d", 4) is True
    assert t.seen_before("s", "other", 4) is False


async def test_spool_is_durable_ordered_and_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=100)
    await spool.append(b"a" * 40)
    await spool.append(b"b" * 40)
    with pytest.raises(SpoolFullError):
        await spool.append(b"c" * 40)
    (tmp_path / "spool" / "000000000099.tmp").write_bytes(b"half written")
    again = Spool(tmp_path / "spool", max_bytes=100)  # a restart finds what was spooled
    assert [again.read(p) for p in again.files()] == [(b"a" * 40, ""), (b"b" * 40, "")]
    assert not list((tmp_path / "spool").glob("*.tmp"))
    again.remove(again.files()[0])
    assert again.bytes == 40
    await again.append(b"d")
    await again.append(b"e", "rejects")  # another retention policy's batch says so in its name
    assert [p.name for p in again.files()] == ["000000000002.lp", "000000000003.lp", "000000000004.rejects.lp"]
    assert [again.read(p) for p in again.files()][-1] == (b"e", "rejects")
    assert Spool(tmp_path / "spool", max_bytes=100)._next == 5


def test_retention_durations() -> None:
    assert duration_ms("0s") == 0
    assert duration_ms("INF") == 0
    assert duration_ms("168h0m0s") == 168 * 3_600_000
    assert duration_ms("1h30m0s") == 90 * 60_000
    assert duration_ms("30d") == 30 * 86_400_000
    assert duration_ms("1w1d12h") == (8 * 24 + 12) * 3_600_000


async def test_completeness_counts_gaps_per_device(influxd: InfluxServer, influx_db: str) -> None:
    base = 1_764_590_400_000
    lines = [
        f"power_meter,device_id=pm1,device_type=power_meter,site=s seq={n}i,power_w=1.0 {base + n * 1000}"
        for n in (1, 2, 4, 5, 9)
    ]
    lines += [
        f"power_meter,device_id=pm2,device_type=power_meter,site=s seq={n}i,power_w=1.0 {base + n * 1000}"
        for n in (1, 2, 3)
    ]
    async with Influx(influxd.url, influx_db) as db:
        await db.write("\n".join(lines).encode())
        job = Completeness(db, IngestMetrics(), period_s=60)
        missing = await job.run_once(base + 60_000)
    assert missing == 4  # pm1 lost 3, 6, 7 and 8
    rows = {r["device_id"]: r for r in influxd.query(influx_db, "SELECT * FROM ingest_completeness")}
    assert (rows["pm1"]["received"], rows["pm1"]["expected"], rows["pm1"]["missing"]) == (5, 9, 4)
    assert (rows["pm2"]["received"], rows["pm2"]["expected"], rows["pm2"]["missing"]) == (3, 3, 0)
    [by_type] = influxd.query(influx_db, "SELECT * FROM ingest_completeness_by_type")
    assert (by_type["device_type"], by_type["received"], by_type["expected"], by_type["missing"]) == (
        "power_meter", 8, 12, 4,
    )  # fmt: skip


async def test_completeness_carries_the_last_seq_into_the_next_window(influxd: InfluxServer, influx_db: str) -> None:
    base = 1_764_590_400_000
    async with Influx(influxd.url, influx_db) as db:
        await db.write(f"radio,device_id=r1,device_type=radio,site=s seq=10i {base + 1000}".encode())
        await db.write(f"radio,device_id=r1,device_type=radio,site=s seq=13i {base + 61_000}".encode())
        job = Completeness(db, IngestMetrics(), period_s=60)
        assert await job.run_once(base + 60_000) == 0
        assert await job.run_once(base + 120_000) == 2  # 11 and 12 fell between the windows


async def test_health_server_answers_metrics_and_health() -> None:
    metrics = IngestMetrics()
    metrics.points_written.inc(3)
    state = {"problem": None}
    async with HealthServer("127.0.0.1", 0, metrics.registry, lambda: state["problem"]) as server:

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        status, body = await asyncio.to_thread(get, "/metrics")
        assert status == 200 and "ingest_points_written_total 3.0" in body
        assert await asyncio.to_thread(get, "/healthz") == (200, "ok\n")
        state["problem"] = "not connected to the broker"
        assert await asyncio.to_thread(get, "/healthz") == (503, "not connected to the broker\n")
        assert (await asyncio.to_thread(get, "/nope"))[0] == 404
