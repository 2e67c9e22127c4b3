"""A paho subscriber that records what the broker delivers, for assertions."""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from tests.support.servers import PASSWORD


@dataclass
class Recorder:
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    subscribed: threading.Event = field(default_factory=threading.Event)

    def topics(self) -> set[str]:
        with self.lock:
            return {t for t, _, _ in self.messages}

    def wait_for(self, predicate: Callable[["Recorder"], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)


def subscribe(
    port: int, topic: str, user: str = "service", client_id: str = "test-recorder", persistent: bool = False
) -> tuple[paho.Client, Recorder]:
    """A QoS 1 subscriber; ``persistent``: its session (and what is queued for it) outlives a broker
    restart, and paho reconnects by itself."""
    rec = Recorder()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.username_pw_set(user, PASSWORD)

    def on_message(c: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with rec.lock:
            rec.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    client.on_message = on_message
    client.on_subscribe = lambda *a: rec.subscribed.set()
    props = Properties(paho.PacketTypes.CONNECT)
    if persistent:
        props.SessionExpiryInterval = 600
    client.reconnect_delay_set(0.1, 1)
    client.connect("127.0.0.1", port, clean_start=not persistent, properties=props)
    client.subscribe(topic, qos=1)
    client.loop_start()
    if not rec.subscribed.wait(10):
        raise RuntimeError("subscription not acknowledged")
    return client, rec


def stop(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()
