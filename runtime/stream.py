"""A service that consumes the device stream (ingest, rules): one MQTT 5 client (runtime/mqtt5) in a
persistent session, whose messages are acknowledged only once handled, QoS 1 publishing within a
window of unacknowledged messages, and a drain that waits for the handlers in flight.

A subclass connects with ``connect_stream`` in its ``open()`` and implements either ``on_message``
(one message at a time: a task each, its PUBACK when it returns; the rules) or ``on_messages`` (a
whole read's messages at once, acknowledged later through ``ack``; ingest's batches).
"""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from prometheus_client import Gauge

from devices.catalog import MAX_PAYLOAD_BYTES
from runtime.mqtt5.client import MqttClient
from runtime.mqtt5.packets import Publish
from runtime.service import Service
from runtime.settings import MqttTarget

# Our own QoS 1 publishes in flight, at most; below any broker's Receive Maximum (Mosquitto's default
# max_inflight_messages is 20).
PUBLISH_WINDOW = 16
# Sent when a handler fails to judge a message at all (a bug): "unspecified error" ends the delivery,
# so a message the service cannot handle never wedges the session.
UNSPECIFIED_ERROR = 0x80


class StreamService(Service):
    def __init__(self, name: str, log: logging.Logger, drain_s: float) -> None:
        super().__init__(name, log, drain_s)
        self.client: MqttClient | None = None
        self._connected_gauge: Gauge | None = None
        self._closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handlers: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    async def on_message(self, message: Publish) -> int:
        """Handle one message; its PUBACK goes out with the returned reason code when this returns."""
        raise NotImplementedError

    def on_messages(self, messages: list[Publish], generation: int) -> None:
        """The messages of one read from the broker, in order. By default each is handled by
        ``on_message`` in a task of its own."""
        for message in messages:
            self.handle_alone(message, generation)

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
        prefix = f"$share/{share_group}/" if share_group else ""
        self._connected_gauge = connected_gauge
        self.client = MqttClient(
            target,
            client_id=client_id,
            subscriptions=[prefix + f for f in filters] + list(own_filters),
            on_messages=self._received,
            session_expiry_s=session_expiry_s,
            receive_maximum=receive_maximum,
            maximum_packet_size=MAX_PAYLOAD_BYTES + 4096,
            publish_window=PUBLISH_WINDOW,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            log=self.log,
        )
        self.stack.push_async_callback(self._closed)
        await self.stack.enter_async_context(self.client)

    async def _closed(self) -> None:
        if not self._closing.done():
            self._closing.set_result(None)

    async def until_closed(self) -> None:
        """For a handler that must not acknowledge: wait until the client is gone."""
        await self._closing

    async def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1, once connected and within the window; sent again after a reconnect until acked."""
        assert self.client is not None
        await self.client.online.wait()
        await self.client.publish(topic, payload)

    def ack(self, generation: int, packet_ids: list[int], reason: int = 0) -> bool:
        assert self.client is not None
        return self.client.ack(generation, packet_ids, reason)

    # -- messages ------------------------------------------------------------------------------------
    def _received(self, messages: list[Publish], generation: int) -> None:
        if self.accepting:  # else never acknowledged: the broker sends them again after a restart
            self.on_messages(messages, generation)

    def handle_alone(self, message: Publish, generation: int) -> None:
        """``on_message`` in a task of its own; acknowledged (QoS 1) when it returns."""
        self.handle_later(self._handle(message, generation))

    def handle_later(self, job: Coroutine[Any, Any, None]) -> None:
        """A message's handling that must wait (a registry read, a dead letter): ``handlers_done``
        waits for it too."""
        task = asyncio.get_running_loop().create_task(job)
        self._handlers.add(task)
        self._idle.clear()
        task.add_done_callback(self._handled)

    async def _handle(self, message: Publish, generation: int) -> None:
        code = await self.on_message(message)
        if message.qos:
            self.ack(generation, [message.packet_id], code)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        if not self._handlers:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            # on_message catches what it can; anything else is a bug that must still be seen.
            self.log.error("message handler failed", exc_info=task.exception())

    async def handlers_done(self) -> None:
        """Every handler in flight has returned and its PUBACK is written."""
        await self._idle.wait()

    def _on_connect(self, session_present: bool) -> None:
        if self._connected_gauge is not None:
            self._connected_gauge.set(1)
        if not session_present:
            self.log.info("new broker session: nothing was queued for this %s", self.name)

    def _on_disconnect(self) -> None:
        if self._connected_gauge is not None:
            self._connected_gauge.set(0)
