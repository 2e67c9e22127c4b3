"""Quarantine (off by default): a device past ESTATEWATCH_INGEST_QUARANTINE_PER_MIN rejects in a minute
is taken off the broker (its client disabled, which kicks it) and disabled in the registry."""

import asyncio
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.estate import Estate
from devices.notices import NoisyDevice, noisy_topic
from devices.types import DeviceType
from store.registry.db import Registry
from tests.support.flood import device_credentials, poison
from tests.support.ingest import until
from tests.support.mqtt import stop, subscribe
from tests.support.pipeline import Factory
from tests.support.servers import Broker


def _connack(port: int, username: str, password: str) -> bool:
    """Whether the broker lets these credentials in."""
    answered, accepted = threading.Event(), {"ok": False}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=paho.MQTTv5)
    client.username_pw_set(username, password)

    def on_connect(c: paho.Client, u: object, flags: object, reason: paho.ReasonCode, props: object) -> None:
        accepted["ok"] = not reason.is_failure
        answered.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert answered.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return accepted["ok"]


def _flood_until_kicked(port: int, username: str, password: str, device_id: str) -> bool:
    kicked = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=paho.MQTTv5)
    client.username_pw_set(username, password)
    client.on_disconnect = lambda *_: kicked.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload, _ in poison(2000):
            if kicked.is_set():
                break
            client.publish(f"estate/v1/small/smoke_sensor/{device_id}/telemetry", payload, qos=1)
            time.sleep(0.001)
        return kicked.wait(20)
    finally:
        client.loop_stop()


async def test_a_noisy_device_is_quarantined(
    broker: Broker, ingest_factory: Factory, small: Estate, registry_url: str
) -> None:
    device = next(d for d in small.devices if d.type is DeviceType.SMOKE_SENSOR)
    username, password = device_credentials(broker, "small", "smoke_sensor", device.id)
    # The ingest user needs dynamic-security rights for this: the tests' "api" user has them.
    worker = ingest_factory(
        "ingest-q", broker_=broker, ESTATEWATCH_MQTT_URL=broker.url("api"),
        ESTATEWATCH_INGEST_QUARANTINE_PER_MIN="200", ESTATEWATCH_INGEST_REJECT_BUDGET_PER_MIN="50",
    ).start()  # fmt: skip
    reports_client, reports = subscribe(broker.port, noisy_topic("small"), client_id="q-reports")

    kicked = await asyncio.to_thread(_flood_until_kicked, broker.port, username, password, device.id)
    assert kicked, "the noisy device was never kicked"
    assert not _connack(broker.port, username, password), "a quarantined device must not get back in"

    async def disabled() -> bool:
        async with Registry(registry_url) as reg:
            found = (await reg.device_index())[("small", DeviceType.SMOKE_SENSOR, device.id)]
        return not found.enabled

    assert await until(disabled, 10)
    assert reports.wait_for(lambda r: any(NoisyDevice.model_validate_json(p).quarantined for _, p, _ in r.messages), 10)
    stop(reports_client)
    assert worker.metrics()["ingest_quarantined_devices_total"] == 1


def test_quarantine_without_the_rights_stops_at_start(broker: Broker, ingest_factory: Factory) -> None:
    worker = ingest_factory("ingest-q2", ESTATEWATCH_INGEST_QUARANTINE_PER_MIN="100")  # the plain service user
    with pytest.raises(RuntimeError, match="admin role") as failed:
        worker.start()
    assert "exited 1" in str(failed.value)
