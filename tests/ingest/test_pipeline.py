"""End to end through real Mosquitto and influxd: every reading stored once, with its values."""

import asyncio
import json
from pathlib import Path

from devices.estate import Estate
from devices.topics import parse_topic
from store.series import measurement
from tests.support.ingest import wait_until_stored
from tests.support.pipeline import Factory, simulate
from tests.support.servers import Broker, InfluxServer


async def test_every_reading_is_stored_once_with_its_values(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate, tmp_path: Path
) -> None:
    worker = ingest_factory().start()
    record = tmp_path / "sent.jsonl"
    sent = await simulate(small, broker, 8, speed=60, record=record)
    wait_until_stored(influxd, influx_db, "small", sent)
    assert sum(sent.values()) > 300

    # Values: every sent reading, field by field, as InfluxDB returns it.
    by_key: dict[tuple[str, int], dict[str, object]] = {}
    topics = {parse_topic(json.loads(line)["topic"]) for line in record.read_text().splitlines()}
    for meas in {measurement(t.device_type, t.channel) for t in topics}:
        for row in influxd.query(influx_db, f"SELECT * FROM \"{meas}\" WHERE site = 'small'"):
            by_key[(str(row["device_id"]), int(row["seq"]))] = row  # type: ignore[call-overload]
    checked = 0
    for line in record.read_text().splitlines():
        msg = json.loads(line)
        t = parse_topic(msg["topic"])
        items = msg["payload"] if isinstance(msg["payload"], list) else [msg["payload"]]
        for item in items:
            row = by_key[(t.device_id, item["seq"])]
            assert row["time"] == item["ts"]
            assert row["site"] == "small" and row["device_type"] == t.device_type.value
            for key, value in item.items():
                if key in ("ts",):
                    continue
                column = "event_type" if key == "type" else key
                stored = row[column]
                if isinstance(value, float) or (
                    isinstance(value, int)
                    and not isinstance(value, bool)
                    and key not in ("seq", "port", "persons", "channel")
                ):
                    assert stored == float(value), (t.device_id, key, stored, value)
                elif key == "port":
                    assert stored == str(value)
                else:
                    assert stored == value, (t.device_id, key, stored, value)
            checked += 1
    assert checked == sum(sent.values())
    metrics = worker.metrics()
    assert not any(k.startswith("ingest_rejects_total{") and v for k, v in metrics.items())


async def test_device_status_is_stored(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate
) -> None:
    ingest_factory().start()
    await simulate(small, broker, 2, speed=60)
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = influxd.query(influx_db, "SELECT last(state) FROM device_status GROUP BY device_id")
        if len(rows) == len(small.devices) and all(r["last"] == "offline" for r in rows):
            break
        await asyncio.sleep(0.3)
    assert len(rows) == len(small.devices)
    assert {r["last"] for r in rows} == {"offline"}, "the last will marks every device offline after the run"
