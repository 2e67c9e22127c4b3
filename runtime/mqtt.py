"""gmqtt clients (the simulator's): connecting, retrying while the broker is unreachable, stopping
when it refuses. The consuming services use runtime/mqtt5."""

import asyncio
import logging
import random
import time
from typing import Any

from gmqtt.mqtt.handler import MQTTConnectError

from runtime.mqtt5.client import BrokerRefusedError
from runtime.settings import MqttTarget

RETRY_MAX_S = 15.0


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
