"""A device that floods the broker with bad messages, on its own credentials, as a broken or hostile
one would: malformed JSON, schema violations, payloads past ingest's size limit."""

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.catalog import MAX_PAYLOAD_BYTES
from store.dynsec import DYNSEC_RESPONSE, DYNSEC_TOPIC, acl_json, device_client
from tests.support.servers import PASSWORD, Broker


def device_credentials(broker: Broker, site: str, device_type: str, device_id: str) -> tuple[str, str]:
    """Create the device's own broker client (as the API's provisioning does); (username, password)."""
    password = secrets.token_urlsafe(16)
    role, client = device_client(site, device_type, device_id, password)
    commands = [
        {"command": "createRole", "rolename": role.name, "acls": [acl_json(a) for a in role.acls]},
        {"command": "createClient", "username": client.username, "password": password,
         "clientid": client.client_id, "roles": [{"rolename": role.name}]},
    ]  # fmt: skip
    answered = threading.Event()
    admin = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-dynsec", protocol=paho.MQTTv5)
    admin.username_pw_set("admin", PASSWORD)
    admin.on_message = lambda c, u, m: answered.set()
    admin.connect("127.0.0.1", broker.port)
    admin.loop_start()
    try:
        admin.subscribe(DYNSEC_RESPONSE, qos=1)
        admin.publish(DYNSEC_TOPIC, json.dumps({"commands": commands}), qos=1).wait_for_publish(10)
        assert answered.wait(10), "dynamic security did not answer"
    finally:
        admin.disconnect()
        admin.loop_stop()
    return client.username, password


# (payload maker, the reason ingest gives): mostly small garbage, now and then an oversize one.
def _bad(n: int) -> tuple[bytes, str]:
    kind = n % 100
    if kind == 0:
        return b"[" + b" " * (MAX_PAYLOAD_BYTES + 16) + b"]", "too_large"
    if kind < 50:
        return b'{"ts": 1, "seq": ' + str(n).encode(), "bad_json"
    return json.dumps({"ts": int(time.time() * 1000), "seq": n, "state": "on fire"}).encode(), "schema"


def poison(count: int) -> Iterator[tuple[bytes, str]]:
    return (_bad(n) for n in range(count))


@dataclass
class FloodResult:
    sent: int
    seconds: float
    by_reason: dict[str, int]


def flood(
    port: int, username: str, password: str, topic: str, count: int, rate: float, client_id: str | None = None
) -> FloodResult:
    """Publish ``count`` bad messages at ``rate`` a second, QoS 1, and wait for every PUBACK."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or username, protocol=paho.MQTTv5)
    client.username_pw_set(username, password)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    by_reason: dict[str, int] = {}
    infos = []
    started = time.perf_counter()
    try:
        for n, (payload, reason) in enumerate(poison(count)):
            by_reason[reason] = by_reason.get(reason, 0) + 1
            infos.append(client.publish(topic, payload, qos=1))
            ahead = started + (n + 1) / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published(), "the broker did not acknowledge a flood message"
    finally:
        client.disconnect()
        client.loop_stop()
    return FloodResult(count, time.perf_counter() - started, by_reason)
