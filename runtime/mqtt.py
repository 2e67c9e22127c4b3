"""gmqtt clients: connecting (retry while the broker is unreachable, stop when it refuses), and QoS 1
publishing within a window of unacknowledged messages."""

import asyncio
import logging
import random
import time
from typing import Any

from gmqtt.mqtt.handler import MQTTConnectError
from gmqtt.storage import PersistentStorage

from runtime.settings import MqttTarget

RETRY_MAX_S = 15.0


class BrokerRefusedError(ConnectionError):
    """The broker answered and said no (bad credentials, not authorised): retrying will not help."""


async def connect(
    client: Any,
    target: MqttTarget,
    *,
    keepalive: int = 60,
    give_up_after_s: float | None = None,
    log: logging.Logger | None = None,
) -> None:
    """Connect, retrying unreachable brokers with jittered backoff (forever, or for ``give_up_after_s``)."""
    delay = 0.5
    deadline = None if give_up_after_s is None else time.monotonic() + give_up_after_s
    while True:
        try:
            await client.connect(target.host, target.port, ssl=target.tls, keepalive=keepalive)
            return
        except MQTTConnectError as exc:
            raise BrokerRefusedError(f"the broker at {target.url()} refused the connection: {exc}") from None
        except OSError as exc:
            if deadline is not None and time.monotonic() > deadline:
                raise ConnectionError(f"cannot reach the broker at {target.url()}: {exc}") from exc
            if log is not None:
                log.warning("broker %s unreachable (%s); retrying", target.url(), exc)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, RETRY_MAX_S)


class PublishWindow(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged QoS 1 publishes, counting free slots: a publisher waits for a
    slot instead of running into the broker's Receive Maximum, past which gmqtt's ``publish()``
    raises OverflowError (and the message is lost to whoever did not expect it)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.free = asyncio.Semaphore(size)

    def remove_message_by_mid(self, mid: int) -> None:
        if mid in self._messages:
            self.free.release()
        super().remove_message_by_mid(mid)

    def clear(self) -> None:
        for _ in self._messages:
            self.free.release()
        super().clear()

    @property
    def in_flight(self) -> int:
        return len(self._messages)


async def publish_qos1(client: Any, window: PublishWindow, topic: str, payload: bytes) -> None:
    """Publish at QoS 1 within the window; gmqtt stores it and resends it after a reconnect until acked."""
    await window.free.acquire()
    try:
        while True:
            try:
                client.publish(topic, payload, qos=1)
                return
            except OverflowError:  # gmqtt frees a packet id a moment after the PUBACK that freed the slot
                await asyncio.sleep(0.001)
    except BaseException:
        window.free.release()  # not stored, so no PUBACK will free it
        raise
