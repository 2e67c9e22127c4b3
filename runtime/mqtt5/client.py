"""The consuming services' MQTT 5 client: a persistent session whose messages the application
acknowledges when it chooses, many at once.

Why not gmqtt, which the services used before: gmqtt acknowledges a QoS 1 message when its async
``on_message`` returns, so waiting for the store meant an asyncio task per message and one socket
write per PUBACK, and its packet parsing is generic; together about half of ingest's CPU per message
(docs/performance.md has the profile and the measurements). Here the receive buffer is cut into
packets in one loop, a whole read's messages go to the application in one call, and ``ack`` writes
the PUBACKs of a stored batch in one buffer. aiomqtt acknowledges before the application sees a
message, and paho runs its network loop in a thread (both measured slower on this machine class).

The client owns one connection at a time and reconnects with jittered backoff; every connection has
a generation number, and an acknowledgement for an earlier generation is not sent: the broker
redelivers those messages on the new connection (with DUP set), and storing them again overwrites.
Its own QoS 1 publishes stay in a window until the broker acknowledges them, and are sent again
after a reconnect. PUBACKs may go out in another order than the messages came (a batch stored by one
writer before an older batch by another): Mosquitto, and the specification's broker side, accept it.
"""

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
from collections.abc import Callable

from runtime.mqtt5 import packets
from runtime.mqtt5.packets import Control, Packet, ProtocolError, Publish
from runtime.settings import MqttTarget

CONNECT_TIMEOUT_S = 10.0
RETRY_FIRST_S = (0.1, 0.3)
RETRY_MAX_S = 15.0
CLOSE_TIMEOUT_S = 5.0
# Reading resumes when acknowledgements bring the unacknowledged messages below this share of the
# Receive Maximum (not at once: a pause per message would follow).
RESUME_AT = 0.75

# Connection numbers, unique in the process (not per client): an acknowledgement can never reach a
# connection other than the one its message came on.
_GENERATIONS = itertools.count(1)

MessagesHandler = Callable[[list[Publish], int], None]


class BrokerRefusedError(ConnectionError):
    """The broker answered and said no (bad credentials, not authorised): retrying will not help."""


# The names as the MQTT 5 specification (3.2.2.2) spells them, as paho and Mosquitto print them.
CONNACK_REASONS = {
    0x80: "Unspecified error", 0x81: "Malformed Packet", 0x82: "Protocol Error",
    0x84: "Unsupported Protocol Version", 0x85: "Client Identifier not valid", 0x86: "Bad User Name or Password",
    0x87: "Not authorized", 0x88: "Server unavailable", 0x89: "Server busy", 0x8A: "Banned",
    0x8C: "Bad authentication method", 0x95: "Packet too large", 0x97: "Quota exceeded",
    0x9F: "Connection rate exceeded",
}  # fmt: skip


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes in, packets to the client."""

    def __init__(self, client: "MqttClient") -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.connack: asyncio.Future[Control] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.generation = 0  # set at CONNACK
        self.heard = True  # anything received since the last keepalive tick
        self.unacked = 0  # QoS 1 messages delivered on this connection, not yet acknowledged
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.heard = True
        if self.buffer or self.paused:
            if self.paused:
                self.client.held_back_bytes += len(data)
            self.buffer += data
            if not self.paused:
                self.read_buffer()
            return
        used = self._read(data)
        if used < len(data):
            self.buffer = bytearray(data[used:])

    def read_buffer(self) -> None:
        """What was kept unread: bytes of a packet still incomplete, or messages past the maximum."""
        if self.buffer and not self.paused:
            del self.buffer[: self._read(self.buffer)]

    def _read(self, view: bytes | bytearray) -> int:
        """Packets out of ``view``, never more messages than the Receive Maximum leaves room for;
        returns the bytes used. At the maximum it stops reading the socket (see ``deliver``)."""
        client, used = self.client, 0
        while True:
            room = client.receive_maximum - self.unacked
            if room <= 0:
                self.pause()
                client.held_back_bytes += len(view) - used
                return used
            try:
                found, took = packets.split(view[used:] if used else view, client.maximum_packet_size, room)
            except ProtocolError as exc:
                client.log.error("broker sent a malformed packet (%s); reconnecting", exc)
                self.abort()
                return len(view)
            used += took
            self._dispatch(found)
            if not took or used == len(view) or self.transport is None or self.transport.is_closing():
                return used

    def _dispatch(self, found: list[Packet]) -> None:
        messages: list[Publish] = []
        for packet in found:
            if type(packet) is Publish:
                messages.append(packet)
                continue
            if messages:  # in the order they came: a CONNACK's messages after it
                self.client.deliver(self, messages)
                messages = []
            assert isinstance(packet, Control)
            self.client.control(self, packet)
        if messages:
            self.client.deliver(self, messages)

    def write(self, data: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self.paused = False
        self.heard = True  # the keepalive judges silence from here on

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_exception(ConnectionResetError(f"connection closed before CONNACK: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.client.lost(self, exc)


class MqttClient:
    """``async with MqttClient(...) as client``: connected (retrying an unreachable broker; a refusal
    raises ``BrokerRefusedError``) and subscribed to ``subscriptions`` at QoS 1 on every connect."""

    def __init__(
        self,
        target: MqttTarget,
        *,
        client_id: str,
        subscriptions: list[str],
        on_messages: MessagesHandler,
        session_expiry_s: int,
        receive_maximum: int,
        maximum_packet_size: int,
        keepalive: int = 30,
        publish_window: int = 16,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.target = target
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.on_messages = on_messages
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.maximum_packet_size = maximum_packet_size
        self.keepalive = keepalive
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.log = log or logging.getLogger("estatewatch.mqtt")
        self.generation = 0
        self.online = asyncio.Event()
        self.refused_filters: list[str] = []
        # Bytes that came while the Receive Maximum was reached (a broker sending past it), kept unread.
        self.held_back_bytes = 0
        self._conn: _Connection | None = None
        self._closing = False
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Our QoS 1 publishes until the broker's PUBACK: packet id -> (topic, payload).
        self._outgoing: dict[int, tuple[str, bytes]] = {}
        self._slots = asyncio.Semaphore(publish_window)
        self._all_acked = asyncio.Event()
        self._all_acked.set()
        self._next_id = 0
        self._subscribe_id = 0

    @property
    def connected(self) -> bool:
        return self.online.is_set()

    # -- lifecycle -----------------------------------------------------------------------------------
    async def __aenter__(self) -> "MqttClient":
        await self._connect_retrying(first=True)
        self._tasks = [
            asyncio.create_task(self._reconnect_forever(), name=f"mqtt:{self.client_id}:reconnect"),
            asyncio.create_task(self._keepalive_forever(), name=f"mqtt:{self.client_id}:keepalive"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """A normal DISCONNECT: the broker keeps the session (and what is unacknowledged) for us."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            # The broker closes the connection after a DISCONNECT. Closing it ourselves while bytes
            # it sent are unread makes the kernel send a reset, and the broker then drops what it
            # had not read yet: measured, the last batch of PUBACKs before a stop.
            conn.write(packets.DISCONNECT_PACKET)
            conn.resume()
            try:
                await asyncio.wait_for(asyncio.shield(conn.closed), CLOSE_TIMEOUT_S)
            except TimeoutError:
                self.log.warning("broker connection did not close in %.0f s; aborting it", CLOSE_TIMEOUT_S)
                conn.abort()

    async def _connect_retrying(self, *, first: bool) -> None:
        delay = RETRY_MAX_S / 30
        while True:
            try:
                await self._open()
                return
            except BrokerRefusedError:
                if first:
                    raise
                self.log.error("the broker refuses this client now; retrying", exc_info=True)
            except OSError as exc:  # unreachable, reset, timed out
                self.log.warning("broker %s unreachable (%s); retrying", self.target.url(), exc)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, RETRY_MAX_S)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self.target.tls else None
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: _Connection(self), self.target.host, self.target.port, ssl=context),
            CONNECT_TIMEOUT_S,
        )
        conn.write(
            packets.connect(
                self.client_id, keepalive=self.keepalive, clean_start=False, session_expiry_s=self.session_expiry_s,
                receive_maximum=self.receive_maximum, maximum_packet_size=self.maximum_packet_size,
                username=self.target.username, password=self.target.password,
            )
        )  # fmt: skip
        try:
            connack = await asyncio.wait_for(asyncio.shield(conn.connack), CONNECT_TIMEOUT_S)
        except BaseException:
            conn.abort()
            raise
        if connack.reason >= 0x80:
            conn.abort()
            why = connack.properties.get(packets.REASON_STRING) or CONNACK_REASONS.get(connack.reason, "refused")
            raise BrokerRefusedError(f"the broker at {self.target.url()} refused the connection: {why}")

    async def _reconnect_forever(self) -> None:
        while True:
            await self._lost.wait()
            self._lost.clear()
            await asyncio.sleep(random.uniform(*RETRY_FIRST_S))
            await self._connect_retrying(first=False)

    async def _keepalive_forever(self) -> None:
        """A PINGREQ every half keepalive; a connection that said nothing for a whole tick is dead."""
        while True:
            await asyncio.sleep(self.keepalive / 2)
            conn = self._conn
            if conn is None or not self.connected:
                continue
            if not conn.heard and not conn.paused:  # paused: not reading is our choice, not its silence
                self.log.warning("broker silent for %.0f s; reconnecting", self.keepalive / 2)
                conn.abort()
                continue
            conn.heard = False
            conn.write(packets.PINGREQ_PACKET)

    # -- from the connection -------------------------------------------------------------------------
    def deliver(self, conn: _Connection, messages: list[Publish]) -> None:
        if conn is not self._conn or not conn.generation or self._closing:
            return  # closing: never acknowledged, so the broker keeps them
        # Mosquitto 2.0.11 sends past our Receive Maximum after a reconnect with a backlog (measured:
        # 65,000 unacknowledged at 20,000). The connection then keeps the rest unparsed and stops
        # reading the socket until acknowledgements make room, so the limit still bounds what this
        # process holds (TCP holds the broker back). Meanwhile nothing is read: PUBACKs for our own
        # publishes wait too, so the work that acknowledges messages must never wait on a publish.
        conn.unacked += sum(m.qos for m in messages)
        self.on_messages(messages, conn.generation)

    def control(self, conn: _Connection, packet: Control) -> None:
        kind = packet.kind
        if kind == packets.PUBACK:
            if self._outgoing.pop(packet.packet_id, None) is not None:
                self._slots.release()
                if not self._outgoing:
                    self._all_acked.set()
                if packet.reason >= 0x80:
                    self.log.warning("the broker refused a publish (reason 0x%02x)", packet.reason)
        elif kind == packets.CONNACK:
            if not conn.connack.done():
                conn.connack.set_result(packet)
            if packet.reason < 0x80:
                self._connected(conn, packet)
        elif kind == packets.SUBACK:
            refused = [f for f, code in zip(self.subscriptions, packet.codes, strict=False) if code >= 0x80]
            if refused:
                self.log.error("the broker refused subscriptions %s (%s)", refused, packet.codes.hex())
            self.refused_filters = refused
        elif kind == packets.DISCONNECT:
            why = packet.properties.get(packets.REASON_STRING, "")
            self.log.warning("the broker disconnects this client (reason 0x%02x %s)", packet.reason, why)
            conn.abort()

    def _connected(self, conn: _Connection, connack: Control) -> None:
        """At CONNACK, before any message after it in the same read is delivered."""
        server_keepalive = connack.properties.get(packets.SERVER_KEEP_ALIVE)
        if server_keepalive:
            self.keepalive = server_keepalive
        self.generation = next(_GENERATIONS)
        conn.generation = self.generation
        self._conn = conn
        for packet_id, (topic, payload) in self._outgoing.items():
            conn.write(packets.publish(topic, payload, qos=1, packet_id=packet_id, dup=connack.session_present))
        # On every connect: Mosquitto 2.0.11 reports a session present after a restart but has not
        # restored its shared subscriptions from the persistence file.
        if self.subscriptions:
            self._subscribe_id = self._subscribe_id % 0xFFFF + 1
            conn.write(packets.subscribe(self._subscribe_id, [(f, 1) for f in self.subscriptions]))
        self.online.set()
        self.log.info("connected to the broker",
                      extra={"session_present": connack.session_present, "client_id": self.client_id})  # fmt: skip
        if self.on_connect is not None:
            self.on_connect(connack.session_present)

    def lost(self, conn: _Connection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        was_online = self.online.is_set()
        self.online.clear()
        if was_online and self.on_disconnect is not None:
            self.on_disconnect()
        if not self._closing:
            if was_online:
                self.log.warning("disconnected from the broker (%r); reconnecting", exc)
            self._lost.set()

    # -- to the broker -------------------------------------------------------------------------------
    def ack(self, generation: int, packet_ids: list[int], reason: int = 0) -> bool:
        """PUBACKs for messages of connection ``generation``, in one write; False (nothing sent) when
        that connection is gone: the broker sends those messages again."""
        conn = self._conn
        if conn is None or conn.generation != generation or not packet_ids:
            return False
        conn.unacked -= len(packet_ids)
        if conn.paused and conn.unacked < self.receive_maximum * RESUME_AT:
            conn.resume()
            asyncio.get_running_loop().call_soon(conn.read_buffer)  # not inside the caller's ack()
        if reason:
            return conn.write(b"".join(packets.puback(p, reason) for p in packet_ids))
        return conn.write(packets.pubacks(packet_ids))

    async def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1, within the window of unacknowledged publishes; kept and sent again after a
        reconnect until the broker acknowledges it."""
        await self._slots.acquire()
        packet_id = self._packet_id()
        self._outgoing[packet_id] = (topic, payload)
        self._all_acked.clear()
        if self._conn is not None and self._conn.generation:
            self._conn.write(packets.publish(topic, payload, qos=1, packet_id=packet_id))

    def _packet_id(self) -> int:
        while True:
            self._next_id = self._next_id % 0xFFFF + 1
            if self._next_id not in self._outgoing:
                return self._next_id

    async def all_acknowledged(self) -> None:
        """Every publish so far has the broker's PUBACK."""
        await self._all_acked.wait()

    @property
    def publishes_in_flight(self) -> int:
        return len(self._outgoing)
