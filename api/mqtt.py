"""The API's one broker connection (aiomqtt): HTTP-ingested readings published at QoS 1 and
awaited, dynamic-security commands and their answers, and the alert changes the stream serves.

aiomqtt here, where ingest and rules use gmqtt: the API's traffic is a few messages per request and
the alert changes (tens per hour), far below aiomqtt's ~7k msg/s, and aiomqtt's publish awaits the
PUBACK, which is exactly what an HTTP response that says "accepted" needs. Its early PUBACK on
receive (issue 345) does not matter: nothing the API receives needs to survive a crash.
"""

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt

from devices.topics import alerts_filter, subscription
from devices.types import Channel
from runtime.settings import MqttTarget
from store.dynsec import DYNSEC_RESPONSE, DYNSEC_TOPIC, DynsecCalls, DynsecError

__all__ = ["ApiBroker", "BrokerError", "DynsecError"]
log = logging.getLogger("estatewatch.api.mqtt")
ALERTS_FILTER = alerts_filter()
TELEMETRY_FILTER = subscription(Channel.TELEMETRY)


class BrokerError(Exception):
    """The broker is away or did not answer in time."""


class ApiBroker:
    def __init__(self, target: MqttTarget, client_id: str, timeout_s: float) -> None:
        self.target = target
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._dynsec = DynsecCalls()
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self.on_alert_change: list[Callable[[dict[str, Any] | None], None]] = []  # None: maybe missed some
        self.on_reconnect: list[Callable[[], None]] = []
        # Device telemetry for the last-value cache (QoS 0: a missed one is looked up in InfluxDB).
        self.on_telemetry: Callable[[str, bytes], None] | None = None

    async def wait_connected(self, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), within_s)
        return self.connected.is_set()

    async def run(self) -> None:
        """Stay connected (jittered backoff between attempts); a task of the API service."""
        delay = 0.5
        while True:
            try:
                async with aiomqtt.Client(
                    self.target.host,
                    self.target.port,
                    username=self.target.username or None,
                    password=self.target.password or None,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    timeout=self.timeout_s,
                ) as client:
                    await client.subscribe(DYNSEC_RESPONSE, qos=1)
                    await client.subscribe(ALERTS_FILTER, qos=1)
                    if self.on_telemetry is not None:
                        await client.subscribe(TELEMETRY_FILTER, qos=0)
                    self._client, delay = client, 0.5
                    self.connected.set()
                    for changed in self.on_alert_change:  # notices may have been missed while away
                        changed(None)
                    for callback in self.on_reconnect:
                        callback()
                    log.info("connected to the broker at %s:%d", self.target.host, self.target.port)
                    async for message in client.messages:
                        topic = str(message.topic)
                        if topic.endswith("/telemetry") and self.on_telemetry is not None:
                            if isinstance(message.payload, bytes):
                                self.on_telemetry(topic, message.payload)
                            continue
                        self._dispatch(topic, message.payload)
            except aiomqtt.MqttError as exc:
                log.warning("broker connection lost (%s); retrying in %.1f s", exc, delay)
            finally:
                self._client = None
                self.connected.clear()
                self._dynsec.fail_all(BrokerError("the broker connection closed"))
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 30.0)

    def _dispatch(self, topic: str, payload: Any) -> None:
        if topic == DYNSEC_RESPONSE:
            self._dynsec.answer(payload)
            return
        try:
            doc = json.loads(payload)
        except (ValueError, TypeError, RecursionError):
            return
        if not isinstance(doc, dict):
            return
        for changed in self.on_alert_change:
            changed(doc)
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled stream client loses changes, not the API
                queue.put_nowait(doc)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return once the broker has acknowledged it."""
        client = self._client
        if client is None:
            raise BrokerError("not connected to the broker")
        try:
            await asyncio.wait_for(client.publish(topic, payload, qos=1), self.timeout_s)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise BrokerError(f"the broker did not acknowledge the publish: {exc}") from exc

    async def dynsec(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Run dynamic-security commands in one message; raises DynsecError on the first that failed."""
        message, futures = self._dynsec.request(*commands)
        try:
            await self.publish(DYNSEC_TOPIC, message)
            return await self._dynsec.results(futures, self.timeout_s)
        except TimeoutError as exc:
            raise BrokerError("the broker's dynamic-security plugin did not answer") from exc
        finally:
            self._dynsec.forget(futures)

    @contextlib.asynccontextmanager
    async def alert_changes(self, backlog: int = 1000) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(backlog)
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)
