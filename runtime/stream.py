"""A service that consumes the device stream (ingest, rules): one gmqtt client in a persistent
session that acknowledges a message only when its handler returns, QoS 1 publishing within a window
of unacknowledged messages, and a drain that waits for the handlers in flight and their PUBACKs.

A subclass connects with ``connect_stream`` in its ``open()`` and implements ``on_message``.
"""

import asyncio
import logging
import random
from typing import Any

import gmqtt
from prometheus_client import Gauge

from devices.catalog import MAX_PAYLOAD_BYTES
from runtime.mqtt import PublishWindow, connect, publish_qos1
from runtime.service import Service
from runtime.settings import MqttTarget

DISCONNECT_TIMEOUT_S = 5.0


class StreamService(Service):
    def __init__(self, name: str, log: logging.Logger, drain_s: float) -> None:
        super().__init__(name, log, drain_s)
        self.connected = False
        self.online = asyncio.Event()
        # Our own QoS 1 publishes in flight, at most; below any broker's Receive Maximum (Mosquitto's
        # default max_inflight_messages is 20).
        self.window = PublishWindow(16)
        self._client: Any = None
        self._client_id = ""
        self._subscriptions: list[str] = []
        self._connected_gauge: Gauge | None = None
        self._closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handling = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def on_message(self, topic: str, payload: bytes, properties: dict[str, Any]) -> int:
        """Handle one message; the PUBACK goes out with the returned reason code when this returns."""
        raise NotImplementedError

    async def connect_stream(
        self,
        target: MqttTarget,
        *,
        client_id: str,
        session_expiry_s: int,
        receive_maximum: int,
        share_group: str,
        filters: list[str],
        connected_gauge: Gauge,
        own_filters: tuple[str, ...] = (),
    ) -> None:
        """``filters`` go through the share group when there is one; ``own_filters`` never do."""
        client = gmqtt.Client(
            client_id,
            clean_session=False,
            optimistic_acknowledgement=False,  # PUBACK when on_message returns, i.e. after the work
            session_expiry_interval=session_expiry_s,
            receive_maximum=receive_maximum,
            maximum_packet_size=MAX_PAYLOAD_BYTES + 4096,
            logger=logging.getLogger(f"gmqtt.{self.name}"),
            persistent_storage=self.window,
        )
        # Back within a fraction of a second: Mosquitto 2.0 does not persist shared subscriptions, so
        # after a broker restart nothing queues for the group until a consumer subscribes again.
        client.set_config({"reconnect_retries": -1, "reconnect_delay": round(random.uniform(0.1, 0.3), 2)})
        if target.username:
            client.set_auth_credentials(target.username, target.password)
        prefix = f"$share/{share_group}/" if share_group else ""
        self._subscriptions = [prefix + f for f in filters] + list(own_filters)
        self._connected_gauge = connected_gauge
        self._client_id = client_id
        client.on_message = self._dispatch
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        self.stack.push_async_callback(self._disconnect)
        await connect(client, target, keepalive=30, log=self.log)

    async def _disconnect(self) -> None:
        try:
            await asyncio.wait_for(self._client.disconnect(), DISCONNECT_TIMEOUT_S)
        except (TimeoutError, OSError) as exc:  # gone already: the broker keeps the session all the same
            self.log.warning("broker disconnect did not complete: %r", exc)
        if not self._closing.done():
            self._closing.set_result(None)

    async def until_closed(self) -> None:
        """For a handler that must not acknowledge: wait until the client is gone."""
        await self._closing

    async def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1, once connected and within the window; gmqtt resends it after a reconnect until acked."""
        await self.online.wait()
        await publish_qos1(self._client, self.window, topic, payload)

    async def handlers_done(self) -> None:
        """Every handler in flight has returned and its PUBACK is written."""
        await self._idle.wait()
        # gmqtt writes a PUBACK from the handler task's done-callback, which runs one loop turn after
        # the handler's last line (where ``_idle`` was set): one turn more and it has been written.
        await asyncio.sleep(0)

    async def _dispatch(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        if not self.accepting:
            # Never acknowledged: the broker redelivers it after this service (or its session) returns.
            await self.until_closed()
            return 0
        self._handling += 1
        self._idle.clear()
        try:
            return await self.on_message(topic, payload, properties)
        finally:
            self._handling -= 1
            if not self._handling:
                self._idle.set()

    def _on_connect(self, client: Any, session_present: int, rc: int, properties: Any) -> None:
        self.connected = True
        self.online.set()
        if self._connected_gauge is not None:
            self._connected_gauge.set(1)
        self.log.info(
            "connected to the broker", extra={"session_present": bool(session_present), "client_id": self._client_id}
        )
        if not session_present:
            self.log.info("new broker session: nothing was queued for this %s", self.name)
        # On every connect, not once: Mosquitto 2.0.11 reports the session present after a restart
        # but has not restored its shared subscriptions from the persistence file.
        client.subscribe([gmqtt.Subscription(f, qos=1) for f in self._subscriptions])

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        self.connected = False
        self.online.clear()
        if self._connected_gauge is not None:
            self._connected_gauge.set(0)
        if self.accepting:
            self.log.warning("disconnected from the broker; reconnecting")
