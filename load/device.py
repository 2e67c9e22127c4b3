"""One device of the load test: its clock (what it says when) and its MQTT link (paho).

Written as plain blocking code: under Locust, gevent's monkey-patching turns the sleeps, sockets
and ``select.poll`` into cooperative ones, so one process carries thousands of devices. paho is the
client because Locust is gevent, not asyncio (gmqtt and aiomqtt need an asyncio loop); it measured
~44k msg/s to a subscriber on this machine class, far above what one device publishes.

paho's own network loop (``loop_start``) cannot serve this: it waits in ``select()``, which refuses
descriptors above 1023, and paho turns that ValueError into "connection lost" and reconnects for
ever. Measured here: of 2,000 clients, 324 connected (each holds three descriptors; paho issues
#183, #238, #819). So each link runs paho's external-loop calls (``loop_read``, ``loop_write``,
``loop_misc``) around ``poll()``, which has no such limit.
"""

import json
import logging
import random
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devices.estate import Device
from devices.topics import device_topic
from devices.types import Channel
from load.ledger import DeviceTally
from sim.behaviour import Behaviour
from sim.schedule import Schedule

log = logging.getLogger("estatewatch.load")
SESSION_EXPIRY_S = 600
KEEPALIVE_S = 60
# A storm's reconnects land within this many seconds of the broker's return (the delay doubles to it).
RECONNECT_MAX_S = 8
# Wake-ups of an idle connection: keepalive pings are due every minute, so a few seconds is plenty.
POLL_MS = 5000
_READ = select.POLLIN | select.POLLPRI


class DeviceClock:
    """One device's schedule for a Locust user: the simulator's own (``sim.schedule.Schedule``),
    for one device, at the scenario's multiplier for it now."""

    def __init__(self, behaviour: Behaviour, rate: Callable[[], float]) -> None:
        self.behaviour = behaviour
        self._schedule = Schedule([behaviour], rate)

    def start(self, now_ms: int) -> None:
        self._schedule.start(now_ms)

    def retime(self, now_ms: int) -> None:
        self._schedule.retime(now_ms)

    def next_ms(self) -> int:
        due = self._schedule.next_ms()
        assert due is not None, "a device always has its next reading scheduled"
        return due

    def due(self, now_ms: int) -> dict[Channel, list[dict[str, Any]]]:
        """What is due by ``now_ms``, by channel (readings of one instant go out as one message)."""
        out: dict[Channel, list[dict[str, Any]]] = {}
        while (entry := self._schedule.pop_due(now_ms)) is not None:
            for channel, objs in entry[2].items():
                out.setdefault(channel, []).extend(objs)
        return out


@dataclass
class Acked:
    """A PUBACK for one message: what it was and how long the broker took."""

    name: str
    seqs: list[int]
    latency_ms: float
    size: int
    refused: str | None  # the broker's failure reason, if it refused the message


class DeviceLink:
    """One device's broker connection: publishes at QoS 1 and records what the broker acknowledged."""

    def __init__(
        self,
        device: Device,
        site: str,
        host: str,
        port: int,
        username: str,
        password: str,
        on_ack: Callable[[Acked], None] = lambda a: None,
    ) -> None:
        self.device = device
        self.record = DeviceTally(device.type.value)
        self.on_ack = on_ack
        self.seq = 0
        self.topics = {ch: device_topic(site, device.type, device.id, ch) for ch in Channel}
        self._pending: dict[int, tuple[str, list[int], float, int]] = {}
        self._early: dict[int, tuple[str | None, float]] = {}
        self._statuses: set[int] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._rng = random.Random(f"link:{device.id}")
        self.session_ts = int(time.time() * 1000)
        self.connected = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=paho.MQTTv5)
        client.username_pw_set(username, password)
        client.will_set(self.topics[Channel.STATUS], self._status("offline"), qos=1, retain=True)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_publish = self._published
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        # paho's default: clean start on the first connection only. A device only publishes, so the
        # broker holds nothing of it worth resuming; what matters after a reconnect is that paho
        # resends every unacknowledged publish, which it does whether or not a session is resumed.
        client.connect_async(host, port, keepalive=KEEPALIVE_S, properties=props)
        self.client = client
        self._thread = threading.Thread(target=self._network, name=f"mqtt:{device.id}", daemon=True)

    def _status(self, state: str) -> bytes:
        # Online and offline carry the session's start: one point in InfluxDB, the last delivered wins.
        return json.dumps({"state": state, "ts": self.session_ts}, separators=(",", ":")).encode()

    def start(self) -> None:
        self._thread.start()

    # -- the network loop ------------------------------------------------------------------------
    def _network(self) -> None:
        """Connect, serve the socket, and reconnect with jittered backoff (1 s doubling to 8 s) until closed."""
        delay = 1.0
        while not self._closing:
            if self.client.socket() is None:
                try:
                    self.client.reconnect()
                except OSError:
                    time.sleep(delay * self._rng.uniform(0.5, 1.5))
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
            if self._serve() is not paho.MQTT_ERR_SUCCESS and not self._closing:
                # paho has closed the socket and called on_disconnect; wait before trying again.
                time.sleep(delay * self._rng.uniform(0.5, 1.5))
                delay = min(delay * 2, RECONNECT_MAX_S)
            elif self.connected.is_set():
                delay = 1.0

    def _serve(self) -> MQTTErrorCode:
        """Read, write and keep alive until the connection ends; paho's result code."""
        sock = self.client.socket()
        if sock is None:
            return paho.MQTT_ERR_NO_CONN
        poller = select.poll()
        writing = self.client.want_write()
        poller.register(sock, _READ | (select.POLLOUT if writing else 0))
        while not self._closing:
            events = poller.poll(POLL_MS)
            rc = paho.MQTT_ERR_SUCCESS
            for _, mask in events:
                if mask & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    rc = self.client.loop_read()
            if rc is paho.MQTT_ERR_SUCCESS and self.client.want_write():
                rc = self.client.loop_write()
            if rc is paho.MQTT_ERR_SUCCESS:
                rc = self.client.loop_misc()
            if rc is not paho.MQTT_ERR_SUCCESS or self.client.socket() is not sock:
                return rc if rc is not paho.MQTT_ERR_SUCCESS else paho.MQTT_ERR_CONN_LOST
            if self.client.want_write() != writing:
                writing = not writing
                poller.modify(sock, _READ | (select.POLLOUT if writing else 0))
        return paho.MQTT_ERR_SUCCESS

    def _connected(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("%s: connection refused: %s", self.device.id, reason)
            return
        self.record.connects.append(time.time())
        self.connected.set()
        # In paho's callback: it queues the packet and cannot acknowledge it before this returns.
        info = client.publish(self.topics[Channel.STATUS], self._status("online"), qos=1, retain=True)
        with self._lock:
            self._statuses.add(info.mid)

    def _disconnected(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected.is_set() and not self._closing:
            self.record.disconnects.append(time.time())
        self.connected.clear()

    # -- publishing ------------------------------------------------------------------------------
    def publish(self, channel: Channel, objs: list[dict[str, Any]]) -> None:
        seqs = []
        for obj in objs:
            self.seq += 1
            obj["seq"] = self.seq
            seqs.append(self.seq)
        payload = objs[0] if len(objs) == 1 else objs
        raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        name = f"{self.device.type.value} {channel.value}"
        started = time.perf_counter()
        # Not under self._lock: paho calls on_publish holding its own message lock (lock order).
        info = self.client.publish(self.topics[channel], raw, qos=1)
        # Any other code (no connection, connection lost while writing) leaves the message in paho's
        # store, sent again after the reconnect; only a full store refuses it.
        if info.rc is MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            # A packet id still in use: dropped, as a device with a full buffer would.
            self.record.refused.update(seqs)
            self.on_ack(Acked(name, seqs, 0.0, len(raw), f"not queued: {paho.error_string(info.rc)}"))
            return
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = (name, seqs, started, len(raw))
                return
        self._settle(name, seqs, started, len(raw), *early)

    def _published(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        refused = str(reason) if reason.is_failure else None
        with self._lock:
            if mid in self._statuses:
                self._statuses.discard(mid)
                return
            pending = self._pending.pop(mid, None)
            if pending is None:  # acknowledged before publish() returned (another thread's PUBACK)
                self._early[mid] = (refused, time.perf_counter())
                return
        self._settle(*pending, refused, time.perf_counter())

    def _settle(self, name: str, seqs: list[int], started: float, size: int, refused: str | None, at: float) -> None:
        (self.record.refused if refused else self.record.acked).update(seqs)
        self.on_ack(Acked(name, seqs, (at - started) * 1000, size, refused))

    def outstanding(self) -> int:
        return len(self._pending)

    def close(self, timeout_s: float = 1.0) -> None:
        """Leave (the will announces the device offline); what was never acknowledged is recorded as such."""
        with self._lock:
            for _, seqs, _, _ in self._pending.values():
                self.record.unacked.update(seqs)
            self._pending.clear()
        self._closing = True
        # Reason 0x04: disconnect with will message.
        self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        # The record is final already (a late PUBACK finds nothing pending); the loop notices the
        # closed socket at its next wake-up, so the wait is bounded, not required.
        if self._thread.is_alive():
            self._thread.join(timeout_s)
