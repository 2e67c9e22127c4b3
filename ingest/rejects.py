"""Rejected messages: counted by reason, published to the dead-letter topic, recorded in InfluxDB."""

import base64
import json
import time
from collections.abc import Callable

from devices.topics import ID_RE, ROOT
from ingest.lines import escape_key, escape_string
from ingest.metrics import IngestMetrics

REJECTS_MEASUREMENT = "ingest_rejects"
# What a dead letter keeps of the original payload.
KEEP_PAYLOAD_BYTES = 4096


def dead_letter_topic(topic: str, reason: str) -> str:
    parts = topic.split("/")
    site = parts[2] if len(parts) > 2 and parts[0:2] == ROOT.split("/") and ID_RE.fullmatch(parts[2]) else "_invalid"
    return f"{ROOT}/{site}/_rejects/{reason}"


def dead_letter(topic: str, payload: bytes, reason: str, detail: str, received_ms: int) -> bytes:
    kept = payload[:KEEP_PAYLOAD_BYTES]
    try:
        text: dict[str, object] = {"payload": kept.decode("utf-8")}
    except UnicodeDecodeError:
        text = {"payload_base64": base64.b64encode(kept).decode()}
    doc = {
        "topic": topic[:512],
        "reason": reason,
        "detail": detail[:500],
        "received_ms": received_ms,
        "payload_bytes": len(payload),
        "truncated": len(payload) > KEEP_PAYLOAD_BYTES,
        **text,
    }
    return json.dumps(doc, ensure_ascii=False).encode()


class Rejects:
    def __init__(self, metrics: IngestMetrics, worker: str, publish: Callable[[str, bytes], None]) -> None:
        self.metrics = metrics
        self.worker = worker
        self.publish = publish
        self._last_ms = 0

    def _stamp(self) -> int:
        # Rejects share a series per reason: one millisecond each so none overwrites another.
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    def record(self, topic: str, payload: bytes, reason: str, detail: str) -> str:
        """Count and dead-letter a rejected message; returns its ``ingest_rejects`` line."""
        now = self._stamp()
        self.metrics.rejects.labels(reason).inc()
        letter_topic = dead_letter_topic(topic, reason)
        self.publish(letter_topic, dead_letter(topic, payload, reason, detail, now))
        site = letter_topic.split("/")[2]
        return (
            f"{REJECTS_MEASUREMENT},reason={escape_key(reason)},site={escape_key(site)},"
            f"worker={escape_key(self.worker)} topic={escape_string(topic[:512])},"
            f"detail={escape_string(detail[:500])},payload_bytes={len(payload)}i {now * 1_000_000}"
        )
