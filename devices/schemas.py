"""JSON Schema of every payload, for vendors to validate against before they connect.

``python -m devices.schemas docs/schemas`` writes them; a test keeps the files current.
"""

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from devices.catalog import CATALOG, MAX_BATCH
from devices.payloads.common import Status
from devices.types import Channel


def schemas() -> dict[str, dict[str, object]]:
    """File name -> schema. A channel's payload is one object or an array of up to MAX_BATCH of them."""
    out: dict[str, dict[str, object]] = {}
    for device_type, spec in CATALOG.items():
        channels: list[tuple[Channel, Any]] = [(Channel.TELEMETRY, spec.telemetry), (Channel.STATUS, Status)]
        if spec.event is not None:
            channels.append((Channel.EVENT, spec.event))
        for channel, model in channels:
            one = TypeAdapter(model).json_schema(ref_template="#/$defs/{model}")
            defs = one.pop("$defs", {})
            title = f"{device_type.value} {channel.value} payload"
            if channel is Channel.STATUS:
                doc: dict[str, object] = {**one, "title": title}
            else:
                defs["Reading"] = one
                doc = {
                    "title": title,
                    "oneOf": [
                        {"$ref": "#/$defs/Reading"},
                        {"type": "array", "items": {"$ref": "#/$defs/Reading"}, "minItems": 1, "maxItems": MAX_BATCH},
                    ],
                }
            if defs:
                doc["$defs"] = defs
            doc = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": f"estatewatch/v1/{device_type.value}.{channel.value}.schema.json",
                **doc,
            }
            out[f"{device_type.value}.{channel.value}.schema.json"] = doc
    return out


def render(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = folder / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
        print(p)
