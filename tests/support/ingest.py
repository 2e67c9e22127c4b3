"""Ingest workers as real processes, and checks of what reached InfluxDB."""

import inspect
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from devices.catalog import CATALOG
from devices.estate import Estate
from devices.types import Channel
from stack.procs import free_port
from store.registry.db import Registry
from store.series import measurement
from tests.support.servers import Broker, InfluxServer

MEASUREMENTS = (
    "/^("
    + "|".join(
        sorted(
            [measurement(t, Channel.TELEMETRY) for t in CATALOG]
            + [measurement(t, Channel.EVENT) for t, s in CATALOG.items() if s.event is not None]
        )
    )
    + ")$/"
)


async def load_registry(where: Path | str, estate: Estate) -> str:
    """``where``: a SQLite file, or any registry URL."""
    url = where if isinstance(where, str) else f"sqlite+aiosqlite:///{where}"
    async with Registry(url) as reg:
        await reg.load_estate(estate)
    return url


def ingest_env(
    broker: Broker, influx_url: str, db: str, registry_url: str, tmp: Path, client_id: str, **extra: str
) -> dict[str, str]:
    return {
        "ESTATEWATCH_MQTT_URL": broker.url("service"),
        "ESTATEWATCH_INFLUX_URL": influx_url,
        "ESTATEWATCH_INFLUX_DATABASE": db,
        "ESTATEWATCH_DB_URL": registry_url,
        "ESTATEWATCH_RUN_DIR": str(tmp / "run"),
        "ESTATEWATCH_INGEST_CLIENT_ID": client_id,
        "ESTATEWATCH_INGEST_METRICS_PORT": str(free_port()),
        "ESTATEWATCH_INGEST_COMPLETENESS_S": "0",
        "ESTATEWATCH_INGEST_STATS_S": "0",  # tests that want ingest_stats ask for it
        "ESTATEWATCH_LOG_FORMAT": "text",
        **extra,
    }


@dataclass
class IngestProcess:
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env["ESTATEWATCH_INGEST_METRICS_PORT"])

    def start(self, timeout: float = 30) -> "IngestProcess":
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "estatewatch", "ingest"],
            env={**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingest exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.healthy():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"ingest not healthy in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def eventually(predicate: Callable[[], bool], within_s: float = 10.0, every: float = 0.2) -> bool:
    """Poll ``predicate`` without blocking the event loop; its last answer."""
    import asyncio

    deadline = time.monotonic() + within_s
    while not _answer(predicate):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


def _answer(predicate: Callable[[], bool]) -> bool:
    answer = predicate()
    if inspect.isawaitable(answer):  # a coroutine is truthy: the wait would end at once
        raise TypeError("eventually() got an async predicate: use until()")
    return answer


async def until(predicate: Callable[[], Awaitable[bool]], within_s: float = 10.0, every: float = 0.1) -> bool:
    """``eventually`` for a predicate that must await (a registry read)."""
    import asyncio

    deadline = time.monotonic() + within_s
    while not await predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


def stored_seqs(influx: InfluxServer, db: str, site: str) -> dict[str, list[int]]:
    """Every stored reading's seq per device, duplicates kept (as separate list items)."""
    rows = influx.query(db, f"SELECT seq, device_id FROM {MEASUREMENTS} WHERE site = '{site}'")
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(str(row["device_id"]), []).append(int(row["seq"]))  # type: ignore[call-overload]
    return out


def missing_and_doubled(
    stored: dict[str, list[int]], sent: dict[str, int]
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per device, the seqs sent but not stored, and the seqs stored more than once."""
    missing, doubled = {}, {}
    for device, last in sent.items():
        counts = Counter(stored.get(device, []))
        gone = [s for s in range(1, last + 1) if counts[s] == 0]
        twice = [s for s, n in counts.items() if n > 1]
        if gone:
            missing[device] = gone
        if twice:
            doubled[device] = twice
    return missing, doubled


def wait_until_stored(influx: InfluxServer, db: str, site: str, sent: dict[str, int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        missing, doubled = missing_and_doubled(stored_seqs(influx, db, site), sent)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    total_sent = sum(sent.values())
    lost = sum(len(v) for v in missing.values())
    assert not missing, f"{lost} of {total_sent} readings never stored: {dict(list(missing.items())[:5])}"
    assert not doubled, f"readings stored twice: {dict(list(doubled.items())[:5])}"
