"""The newest telemetry of every device, kept in memory from the broker's stream (a last-value
cache). "Latest readings" at hundreds of requests a second cannot be asked of InfluxDB (measured:
InfluxDB 1.6 alone fell behind at 200 of those queries a second on two cores); a device's latest
reading changes only when it reports, and every report passes through the broker.

A device this process has not heard from since it (re)connected is looked up in InfluxDB, once
per time window asked for; after that the stream keeps it current. A reading stamped further ahead
than ``future_ms`` is not taken (a device with a wrong clock must not pin its "latest").
"""

import time
from dataclasses import dataclass
from typing import Any

from devices.catalog import PayloadError, parse_payload
from devices.payloads.common import Status
from devices.topics import TopicError, parse_topic
from devices.types import Channel
from store.series import TAG_FIELDS, TAG_NAMES

Key = tuple[str, str]  # (site, device id)


@dataclass(frozen=True, slots=True)
class LastValue:
    ts: int
    tags: dict[str, str]  # the reading's own tags (a charger's port); the device's come from the registry
    fields: dict[str, Any]


class LastValues:
    def __init__(self, future_ms: int = 300_000) -> None:
        self.future_ms = future_ms
        self._values: dict[Key, LastValue] = {}
        self._epoch = 0  # bumped at every reconnect: values from before it may have been overtaken
        self._value_epoch: dict[Key, int] = {}
        # From when on the newest reading is certainly in memory (looked up back to there, or heard
        # since): a device's newest reading since T needs InfluxDB only if T is earlier.
        self._complete_from: dict[Key, int] = {}

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            t = parse_topic(topic)
            if t.channel is not Channel.TELEMETRY:
                return
            parsed = parse_payload(t.device_type, t.channel, payload)
        except (TopicError, PayloadError):
            return  # ingest rejects and dead-letters it; the cache just ignores it
        if isinstance(parsed, Status):
            return
        for reading in parsed:
            doc = reading.model_dump(mode="json", exclude={"ts"}, exclude_none=True)
            tags = {TAG_NAMES.get(k, k): str(doc.pop(k)) for k in TAG_FIELDS if k in doc}
            self.offer((t.site, t.device_id), LastValue(reading.ts, tags, doc))

    def offer(self, key: Key, value: LastValue) -> None:
        if value.ts > time.time() * 1000 + self.future_ms:
            return
        current = self._values.get(key)
        if current is None or value.ts >= current.ts:
            self._values[key] = value
            self._value_epoch[key] = self._epoch

    def unknown(self, keys: list[Key], since: int) -> list[Key]:
        """Of ``keys``, those whose newest reading since ``since`` memory cannot tell."""
        out = []
        for k in keys:
            value = self._values.get(k)
            if value is not None and value.ts >= since and self._value_epoch.get(k) == self._epoch:
                continue  # heard since connecting: anything newer would have come through the stream
            if self._complete_from.get(k, since + 1) <= since:
                continue  # looked up back to before ``since``: nothing there
            out.append(k)
        return out

    def learned(self, keys: list[Key], since: int) -> None:
        """These were looked up in InfluxDB back to ``since`` (found or not)."""
        for k in keys:
            self._complete_from[k] = min(self._complete_from.get(k, since), since)

    def get(self, key: Key) -> LastValue | None:
        return self._values.get(key)

    def forget_known(self) -> None:
        """After a broker reconnect: readings may have passed unseen, so look each device up again."""
        self._complete_from.clear()
        self._epoch += 1
