"""What the load's devices sent and what the broker acknowledged, written by each Locust process
and read by the verifier.

One file per process (``ledger-<pid>.json``), so processes never share a file: per device its
type, the seqs the broker acknowledged (as ranges), the seqs sent but never acknowledged, and
when it connected. The probe's latencies go to ``probe-<pid>.jsonl`` as they are measured.
"""

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEDGER_GLOB = "ledger-*.json"
PROBE_GLOB = "probe-*.jsonl"


def to_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Sorted, de-duplicated seqs as inclusive [low, high] ranges: a device's seqs are mostly runs."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def from_ranges(ranges: Iterable[Iterable[int]]) -> set[int]:
    seqs: set[int] = set()
    for low, high in ranges:
        seqs.update(range(low, high + 1))
    return seqs


@dataclass
class DeviceTally:
    type: str
    acked: set[int] = field(default_factory=set)
    unacked: set[int] = field(default_factory=set)  # sent, no PUBACK when the run ended
    refused: set[int] = field(default_factory=set)  # the broker answered PUBACK with a failure code
    connects: list[float] = field(default_factory=list)  # wall-clock seconds of each CONNACK
    disconnects: list[float] = field(default_factory=list)  # ... and of each lost connection

    @property
    def connected_at_end(self) -> bool:
        return bool(self.connects) and (not self.disconnects or self.connects[-1] > self.disconnects[-1])

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "acked": to_ranges(self.acked),
            "unacked": sorted(self.unacked),
            "refused": sorted(self.refused),
            "connects": [round(t, 3) for t in self.connects],
            "disconnects": [round(t, 3) for t in self.disconnects],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DeviceTally":
        return cls(
            data["type"],
            from_ranges(data["acked"]),
            set(data["unacked"]),
            set(data.get("refused", [])),
            list(data["connects"]),
            list(data.get("disconnects", [])),
        )


@dataclass
class Ledger:
    site: str
    devices: dict[str, DeviceTally] = field(default_factory=dict)
    started: float = 0.0  # wall-clock seconds: the first device's start
    ended: float = 0.0

    def write(self, folder: Path) -> Path:
        path = folder / f"ledger-{os.getpid()}.json"
        body = {
            "site": self.site,
            "started": self.started,
            "ended": self.ended,
            "devices": {d: r.to_json() for d, r in self.devices.items()},
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, separators=(",", ":")))
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, folder: Path) -> "Ledger":
        """Every process's ledger in ``folder`` as one."""
        merged: Ledger | None = None
        for path in sorted(folder.glob(LEDGER_GLOB)):
            data = json.loads(path.read_text())
            part = cls(
                data["site"],
                {d: DeviceTally.from_json(r) for d, r in data["devices"].items()},
                data["started"],
                data["ended"],
            )
            if merged is None:
                merged = part
                continue
            overlap = merged.devices.keys() & part.devices.keys()
            if overlap:
                raise ValueError(f"{path}: devices {sorted(overlap)[:3]} are in two ledgers: two users had one device")
            merged.devices.update(part.devices)
            merged.started = min(merged.started, part.started) if merged.started else part.started
            merged.ended = max(merged.ended, part.ended)
        if merged is None:
            raise FileNotFoundError(f"no {LEDGER_GLOB} in {folder}: did the Locust run start any device?")
        return merged


def read_probe(folder: Path) -> list[tuple[float, float | None]]:
    """(publish time, latency ms or None when the reading never became queryable), in time order."""
    samples: list[tuple[float, float | None]] = []
    for path in folder.glob(PROBE_GLOB):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                samples.append((row["t"], row["latency_ms"]))
    return sorted(samples, key=lambda s: s[0])
