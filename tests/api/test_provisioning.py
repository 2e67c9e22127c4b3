"""A device registered through the API gets its own broker client: it publishes on its own topics
only, its readings land in InfluxDB, and disabling, rotating and deleting act on the live broker."""

import json
import threading
import time
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.support import mqtt
from tests.support.api import RunningApi, Tokens
from tests.support.ingest import eventually
from tests.support.pipeline import Factory
from tests.support.servers import Broker, InfluxServer

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries

NEW = {"site": "small", "id": "smk-new-1", "type": "smoke_sensor", "building": "b001", "unit": "b001-u1", "floor": 3}


class DeviceClient:
    """A device as a vendor's firmware would be: its username, password and pinned client id."""

    def __init__(self, port: int, username: str, password: str, client_id: str) -> None:
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: list[list[ReasonCode]] = []
        self.connected = threading.Event()
        c = self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.disconnected.set()
        c.on_publish = lambda client, userdata, mid, rc, props: self.acks.__setitem__(mid, rc)
        c.on_subscribe = lambda client, userdata, mid, rcs, props: self.subacks.append(rcs)
        c.connect("127.0.0.1", port)
        c.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, props: Properties | None) -> None:
        self.connack = rc
        if not rc.is_failure:
            self.connected.set()

    def wait_connack(self, timeout: float = 10) -> ReasonCode:
        deadline = time.monotonic() + timeout
        while self.connack is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.connack is not None, "no CONNACK"
        return self.connack

    def publish(self, topic: str, body: dict[str, Any]) -> ReasonCode:
        info = self.client.publish(topic, json.dumps(body), qos=1)
        deadline = time.monotonic() + 10
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def reading(seq: int) -> dict[str, Any]:
    return {"ts": int(time.time() * 1000), "seq": seq, "state": "normal", "smoke_obscuration_pct": 0.1,
            "temp_c": 21.0, "battery_pct": 90.0, "rssi_dbm": -70.0}  # fmt: skip


async def register(api: RunningApi, token: str, body: dict[str, Any] = NEW) -> dict[str, Any]:
    async with api.client(token) as c:
        r = await c.post("/api/v1/devices", json=body)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def test_a_registered_device_publishes_on_its_topic_and_nowhere_else(
    api: RunningApi, tokens: Tokens, broker: Broker, ingest_factory: Factory, influxd: InfluxServer, influx_db: str
) -> None:
    ingest_factory().start()
    created = await register(api, tokens.vendor_a)
    creds, device = created["credentials"], created["device"]
    assert device["vendor"] == "acme" and device["status"] == "never_seen" and device["mqtt_username"]
    assert creds["client_id"] == creds["username"] == "small.smk-new-1"
    own = creds["publish_under"]
    assert own == "estate/v1/small/smoke_sensor/smk-new-1"

    listener, heard = mqtt.subscribe(broker.port, "estate/v1/#", client_id="test-listener")
    dev = DeviceClient(broker.port, creds["username"], creds["password"], creds["client_id"])
    try:
        assert not dev.wait_connack().is_failure
        assert not dev.publish(f"{own}/telemetry", reading(1)).is_failure
        rows = lambda: influxd.query(influx_db, "SELECT * FROM smoke_sensor WHERE device_id = 'smk-new-1'")  # noqa: E731
        assert await eventually(lambda: bool(rows()), 20), "the reading did not reach InfluxDB"
        assert rows()[0]["building"] == "b001"

        other = "estate/v1/small/smoke_sensor/smk-b001-u1-101/telemetry"
        refused = (other, f"{own}/command", "$CONTROL/dynamic-security/v1", "estate/v1/small/alerts/g01/fire/change")
        for topic in refused:
            assert dev.publish(topic, reading(2)).is_failure, f"{topic} should be refused"
        dev.client.subscribe("#", qos=1)
        dev.client.subscribe(f"{own}/command", qos=1)
        assert await eventually(lambda: len(dev.subacks) == 2, 10)
        assert dev.subacks[0][0].is_failure and not dev.subacks[1][0].is_failure
        # A marker after the refused ones: once it is heard, they would have been.
        assert not dev.publish(f"{own}/status", {"state": "online", "ts": 1}).is_failure
        assert await eventually(lambda: f"{own}/status" in heard.topics(), 10)
        assert other not in heard.topics() and f"{own}/command" not in heard.topics()
    finally:
        dev.close()
        mqtt.stop(listener)

    thief = DeviceClient(broker.port, creds["username"], creds["password"], "someone-else")
    try:
        assert thief.wait_connack().is_failure, "the credentials are pinned to the device's client id"
    finally:
        thief.close()


@pytest.mark.parametrize("bad_id", ["a+b", "a#", "A/b", "+", "#", "x" * 65, "$sys"])
async def test_ids_that_would_be_wildcards_or_topics_are_refused(api: RunningApi, tokens: Tokens, bad_id: str) -> None:
    async with api.client(tokens.vendor_a) as c:
        r = await c.post("/api/v1/devices", json={**NEW, "id": bad_id})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"


async def test_disabling_kicks_the_device_and_keeps_it_out_until_enabled(
    api: RunningApi, tokens: Tokens, broker: Broker
) -> None:
    creds = (await register(api, tokens.vendor_a))["credentials"]
    dev = DeviceClient(broker.port, creds["username"], creds["password"], creds["client_id"])
    try:
        assert not dev.wait_connack().is_failure
        async with api.client(tokens.vendor_a) as c:
            r = await c.patch("/api/v1/devices/small/smk-new-1", json={"enabled": False})
        assert r.status_code == 200 and r.json()["status"] == "disabled"
        assert dev.disconnected.wait(10), "the live connection was not kicked"
    finally:
        dev.close()
    again = DeviceClient(broker.port, creds["username"], creds["password"], creds["client_id"])
    try:
        assert again.wait_connack().is_failure
    finally:
        again.close()
    async with api.client(tokens.vendor_a) as c:
        assert (await c.patch("/api/v1/devices/small/smk-new-1", json={"enabled": True})).status_code == 200
    back = DeviceClient(broker.port, creds["username"], creds["password"], creds["client_id"])
    try:
        assert not back.wait_connack().is_failure
    finally:
        back.close()


async def test_rotation_retires_the_old_password_and_delete_removes_the_client(
    api: RunningApi, tokens: Tokens, broker: Broker
) -> None:
    old = (await register(api, tokens.vendor_a))["credentials"]
    async with api.client(tokens.vendor_a) as c:
        r = await c.post("/api/v1/devices/small/smk-new-1/credentials")
    assert r.status_code == 201
    new = r.json()
    assert new["password"] != old["password"] and new["username"] == old["username"]
    stale = DeviceClient(broker.port, old["username"], old["password"], old["client_id"])
    fresh = DeviceClient(broker.port, new["username"], new["password"], new["client_id"])
    try:
        assert stale.wait_connack().is_failure and not fresh.wait_connack().is_failure
        async with api.client(tokens.vendor_a) as c:
            assert (await c.delete("/api/v1/devices/small/smk-new-1")).status_code == 204
            assert (await c.get("/api/v1/devices/small/smk-new-1")).status_code == 404
        assert fresh.disconnected.wait(10), "deleting the device kicks it"
    finally:
        stale.close()
        fresh.close()
    gone = DeviceClient(broker.port, new["username"], new["password"], new["client_id"])
    try:
        assert gone.wait_connack().is_failure
    finally:
        gone.close()


async def test_rotation_closes_the_live_connection_as_its_summary_says(
    api: RunningApi, tokens: Tokens, broker: Broker
) -> None:
    old = (await register(api, tokens.vendor_a))["credentials"]
    live = DeviceClient(broker.port, old["username"], old["password"], old["client_id"])
    try:
        assert not live.wait_connack().is_failure
        async with api.client(tokens.vendor_a) as c:
            assert (await c.post("/api/v1/devices/small/smk-new-1/credentials")).status_code == 201
            spec = (await c.get("/api/v1/openapi.json")).json()
        assert live.disconnected.wait(10), "rotation leaves the old password's connection open"
    finally:
        live.close()
    summaries = {op["operationId"]: op["summary"] for path in spec["paths"].values() for op in path.values()}
    assert "closed at once" in summaries["rotateCredentials"]
    assert "kicks" in summaries["updateDevice"] and "kicks" in summaries["deleteDevice"]


def test_the_devices_wire_model_is_the_registry_record_field_for_field() -> None:
    """DeviceOut is spelled out (the API's contract), and may not drift from the record it shows."""
    import dataclasses

    from api.models import DeviceOut
    from store.devices import DeviceRecord

    record = {f.name for f in dataclasses.fields(DeviceRecord)} - {"username"}
    assert set(DeviceOut.model_fields) == record | {"mqtt_username", "status", "last_seen_ms"}
