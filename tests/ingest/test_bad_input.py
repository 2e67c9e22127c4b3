"""A corpus of bad messages among good ones: each rejected for its reason, the worker alive, the good stored."""

import json
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.catalog import MAX_PAYLOAD_BYTES
from tests.support.mqtt import stop, subscribe
from tests.support.pipeline import Factory
from tests.support.servers import PASSWORD, Broker, InfluxServer

METER = "estate/v1/small/power_meter/pm-b001-u1/telemetry"
NOW = int(time.time() * 1000)


def meter(seq: int, **change: object) -> bytes:
    body = {
        "ts": NOW + seq,
        "seq": seq,
        "power_w": 20.0 + seq,
        "voltage_v": 221.0,
        "current_a": 0.1,
        "energy_wh": 1000.0,
        **change,
    }
    return json.dumps(body).encode()


# (topic, payload, reason)
CORPUS: list[tuple[str, bytes, str]] = [
    (METER, b'{"ts": 1, "seq": ', "bad_json"),
    (METER, b"\xff\xfe not utf-8", "bad_json"),
    (METER, meter(1001).replace(b'"power_w": 1021.0', b'"power_w": NaN'), "schema"),
    (METER, meter(1002).replace(b'"power_w": 1022.0', b'"power_w": Infinity'), "schema"),
    (METER, meter(1003).replace(b'"seq": 1003', b'"seq": ' + b"9" * 4300), "schema"),
    (METER, b'{"ts": 1, "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", "bad_json"),
    (METER, b"[" + b" " * (MAX_PAYLOAD_BYTES + 10) + b"]", "too_large"),
    (METER, meter(1004, power_w=-5), "schema"),
    (METER, meter(1005, surprise=1), "schema"),
    (METER, meter(1006, ts=NOW + 3 * 86_400_000), "future"),
    (METER, meter(1007, ts=NOW - 3 * 3_600_000), "too_old"),
    ("estate/v1/small/power_meter/pm-nobody/telemetry", meter(1008), "unknown_device"),
    ("estate/v1/small/toaster/pm-b001-u1/telemetry", meter(1009), "unknown_type"),
    ("estate/v1/small/power_meter/pm b001,x=1/telemetry", meter(1010), "bad_id"),
    ("estate/v1/small/power_meter/pm\\b001/telemetry", meter(1011), "bad_id"),
    ('estate/v1/sm"all/power_meter/pm-b001-u1/telemetry', meter(1012), "bad_id"),
    ("estate/v1/small/power_meter/pm-b001-u1/event", meter(1013), "bad_channel"),
    (
        "estate/v1/small/door_controller/door-b001-u1/event",
        b'{"ts": %d, "seq": 1, "type": "access", "method": "card", "granted": true, "credential": "a\\"b,c=d e\\n"}'
        % NOW,
        "schema",
    ),
    (
        "estate/v1/small/vehicle_gate/vg-north/event",
        json.dumps(
            {"ts": NOW, "seq": 1, "type": "plate_read", "plate": "苏C1,x=1 y", "direction": "in", "confidence": 0.9},
            ensure_ascii=False,
        ).encode(),
        "schema",
    ),
]


@pytest.fixture
def one_hour_retention(influxd: InfluxServer, influx_db: str) -> None:
    import urllib.parse
    import urllib.request

    q = f'ALTER RETENTION POLICY "autogen" ON "{influx_db}" DURATION 1h SHARD DURATION 1h DEFAULT'
    urllib.request.urlopen(f"{influxd.url}/query", data=urllib.parse.urlencode({"q": q}).encode()).close()


def test_bad_inputs_are_rejected_and_good_ones_around_them_stored(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, one_hour_retention: None
) -> None:
    worker = ingest_factory("ingest-bad").start()
    dead, letters = subscribe(broker.port, "estate/v1/+/_rejects/#", client_id="dead-letters")
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="vendor", protocol=paho.MQTTv5)
    pub.username_pw_set("service", PASSWORD)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        seq = 0
        for topic, payload, _ in CORPUS:
            seq += 1
            pub.publish(METER, meter(seq), qos=1).wait_for_publish(10)
            pub.publish(topic, payload, qos=1).wait_for_publish(10)
        seq += 1
        pub.publish(METER, meter(seq), qos=1).wait_for_publish(10)
        good = seq
        assert letters.wait_for(lambda r: len(r.messages) >= len(CORPUS), 30), (
            f"{len(letters.messages)} dead letters of {len(CORPUS)}"
        )
    finally:
        pub.loop_stop()
        stop(dead)

    expected: dict[str, int] = {}
    for _, _, reason in CORPUS:
        expected[reason] = expected.get(reason, 0) + 1
    metrics = worker.metrics()
    for reason, count in expected.items():
        assert metrics.get(f'ingest_rejects_total{{reason="{reason}"}}') == count, reason
    got = {json.loads(p)["reason"] for _, p, _ in letters.messages}
    assert got == set(expected)
    topics = {t for t, _, _ in letters.messages}
    assert "estate/v1/small/_rejects/bad_json" in topics
    assert "estate/v1/_invalid/_rejects/bad_id" in topics  # the site itself was bad
    letter = json.loads(next(p for t, p, _ in letters.messages if t.endswith("/future")))
    assert letter["topic"] == METER and "ahead of the clock" in letter["detail"] and letter["payload"]

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = influxd.query(influx_db, "SELECT seq, power_w FROM power_meter WHERE device_id = 'pm-b001-u1'")
        if len(rows) >= good:
            break
        time.sleep(0.2)
    assert sorted(int(r["seq"]) for r in rows) == list(range(1, good + 1))  # type: ignore[call-overload]
    assert all(r["power_w"] == 20.0 + int(r["seq"]) for r in rows)  # type: ignore[call-overload]

    def stored_rejects() -> dict[object, object]:
        rows = influxd.query(influx_db, 'SELECT count(payload_bytes) FROM "rejects"."ingest_rejects" GROUP BY reason')
        return {r["reason"]: r["count"] for r in rows}

    def counted_rejects() -> dict[object, object]:
        rows = influxd.query(influx_db, 'SELECT sum("count") FROM "rejects"."ingest_reject_counts" GROUP BY reason')
        return {r["reason"]: r["sum"] for r in rows}

    # The notice goes out as the reject is judged; its records are stored before it is acknowledged.
    deadline = time.monotonic() + 10
    while (stored_rejects(), counted_rejects()) != (expected, expected) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored_rejects() == expected  # each kept whole (far below the budget)
    assert counted_rejects() == expected
    kept = influxd.query(
        influx_db, """SELECT payload, payload_encoding FROM "rejects"."ingest_rejects" WHERE reason = 'future'"""
    )
    assert json.loads(str(kept[0]["payload"]))["seq"] == 1006 and kept[0]["payload_encoding"] == "utf-8"
    binary = influxd.query(
        influx_db, """SELECT payload, payload_encoding FROM "rejects"."ingest_rejects" WHERE reason = 'bad_json'"""
    )
    assert "base64" in {r["payload_encoding"] for r in binary}  # the bytes that are not UTF-8
    assert worker.healthy() and worker.proc is not None and worker.proc.poll() is None


def test_the_broker_refuses_packets_over_its_limit(broker: Broker, ingest_factory: Factory) -> None:
    """Past max_packet_size the broker drops the publisher, and ingest never sees it."""
    worker = ingest_factory("ingest-big").start()
    connected, dropped = threading.Event(), threading.Event()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="big", protocol=paho.MQTTv5)
    pub.username_pw_set("service", PASSWORD)
    pub.on_connect = lambda *_: connected.set()
    # paho reconnects on its own a second later, so the drop is caught as it happens, not polled.
    pub.on_disconnect = lambda *_: dropped.set()
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        assert connected.wait(10)
        pub.publish(METER, b"x" * (MAX_PAYLOAD_BYTES + 64 * 1024), qos=1)
        assert dropped.wait(10)
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert worker.healthy()
    assert not any(k.startswith("ingest_rejects_total{") and v for k, v in worker.metrics().items())
