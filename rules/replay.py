"""``estatewatch rules replay FILE``: recorded messages through the engine, alert changes out."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rules.engine import Engine


class ReplayError(ValueError):
    pass


def messages(path: Path) -> Iterator[tuple[int, str, bytes]]:
    """(line number, topic, raw payload) per JSON line ``{"topic": ..., "payload": ...}``."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                doc: Any = json.loads(line)
                topic, payload = doc["topic"], doc["payload"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ReplayError(f'{path}:{number}: not a {{"topic", "payload"}} JSON line ({exc})') from None
            if not isinstance(topic, str):
                raise ReplayError(f"{path}:{number}: topic must be a string")
            raw = payload.encode() if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False).encode()
            yield number, topic, raw


def replay(engine: Engine, path: Path) -> Iterator[dict[str, Any]]:
    for _, topic, raw in messages(path):
        for change in engine.process(topic, raw):
            yield change.as_json()
