"""What every platform service that consumes the device stream shares (ingest, rules): one gmqtt
client in a persistent session that acknowledges only when the handler returns, named background
tasks of which any failing stops the service (``failed`` says which, so the command exits non-zero),
QoS 1 publishing within a window of unacknowledged messages, and stop / wait / drain / close.

A subclass opens its clients in ``__aenter__`` (after ``_opening()``), starts its tasks with
``_start_tasks``, connects with ``_connect_stream`` and implements ``_on_message`` and ``drain``.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import gmqtt
from prometheus_client import Gauge

from devices.catalog import MAX_PAYLOAD_BYTES
from store.mqtt import PublishWindow, connect, publish_qos1
from store.settings import MqttTarget


class StreamConsumer:
    def __init__(self, name: str, log: logging.Logger) -> None:
        self.name = name
        self.log = log
        self.connected = False
        self.accepting = True
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._closing: asyncio.Future[None] | None = None
        self._client: Any = None
        self._subscriptions: list[str] = []
        self._connected_gauge: Gauge | None = None
        self.online = asyncio.Event()
        # Our own QoS 1 publishes in flight, at most; below any broker's Receive Maximum (Mosquitto's
        # default max_inflight_messages is 20).
        self.window = PublishWindow(16)
        self.failed: BaseException | None = None  # the task failure that stopped the service

    # -- lifecycle -------------------------------------------------------------------------------
    def _opening(self) -> None:
        self._closing = asyncio.get_running_loop().create_future()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.drain()
        await self._close()

    def stop(self) -> None:
        """Stop taking input; ``wait()`` returns and leaving the context drains."""
        self.accepting = False
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    async def drain(self) -> None:
        raise NotImplementedError

    async def _until_closed(self) -> None:
        """For a handler that must not acknowledge: wait until the client is gone."""
        assert self._closing is not None
        await self._closing

    def _start_tasks(self, jobs: dict[str, Coroutine[Any, Any, None]]) -> None:
        self._tasks = [asyncio.create_task(job, name=f"{self.name}:{n}") for n, job in jobs.items()]
        for task in self._tasks:
            task.add_done_callback(self._task_died)

    def _task_died(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None and self.accepting:
            exc = RuntimeError(f"task {task.get_name()} returned")  # they run forever: returning is a bug
        if exc is not None:
            self.log.error("task %s failed; stopping", task.get_name(), exc_info=exc)
            if self.failed is None:
                self.failed = exc
            self.stop()

    async def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1, once connected and within the window; gmqtt resends it after a reconnect until acked."""
        await self.online.wait()
        await publish_qos1(self._client, self.window, topic, payload)

    async def _close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.disconnect(), 5)
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()

    # -- the stream ------------------------------------------------------------------------------
    async def _connect_stream(
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
            optimistic_acknowledgement=False,  # PUBACK when _on_message returns, i.e. after the work
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
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        await connect(client, target, keepalive=30, log=self.log)

    async def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        raise NotImplementedError

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
