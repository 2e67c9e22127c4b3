"""Batches into InfluxDB: retry, back off, split, isolate bad lines, and spool while InfluxDB is away.

Every entry (the lines of one MQTT message) ends in exactly one outcome: stored, spooled (durable on
disk, replayed later) or refused (InfluxDB refuses its lines; the message then goes to the dead
letters). Until then the message is not acknowledged: when neither InfluxDB nor the spool takes a
batch (InfluxDB away and the spool full or unwritable), the writer holds it and keeps trying both.
"""

import asyncio
import contextlib
import gzip
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from ingest.metrics import IngestMetrics
from ingest.spool import Spool, SpoolFullError
from store.influx import Influx, InfluxError

log = logging.getLogger("estatewatch.ingest.writer")
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
GZIP_MIN_BYTES = 64 * 1024


class Outcome(Enum):
    STORED = "stored"
    SPOOLED = "spooled"
    REFUSED = "refused"


@dataclass(slots=True, eq=False)
class Entry:
    """The lines of one MQTT message (or of one record of ingest's own), for one retention policy
    (``rp``, '' for the database's default). Its outcome goes to ``settled`` (called once) and to
    whoever awaits ``done``; a message's acknowledgement waits on one of them."""

    lines: list[str]
    rp: str = ""
    settled: Callable[["Entry"], None] | None = None
    outcome: Outcome | None = None
    refusal: str = ""  # what InfluxDB said, when refused
    _done: "asyncio.Future[Outcome] | None" = None

    def settle(self, outcome: Outcome, refusal: str = "") -> None:
        if self.outcome is not None:
            return
        self.outcome, self.refusal = outcome, refusal
        if self.settled is not None:
            self.settled(self)
        if self._done is not None:
            self._done.set_result(outcome)

    @property
    def done(self) -> "asyncio.Future[Outcome]":
        """A future of the outcome, made on first use (most entries are settled through ``settled``)."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            if self.outcome is not None:
                self._done.set_result(self.outcome)
        return self._done


class InfluxUnavailableError(RuntimeError):
    """InfluxDB did not take a write within the retry budget."""


class _RefusedError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status = status
        self.body = body


def _retryable(exc: InfluxError) -> bool:
    return exc.status is None or exc.status >= 500 or exc.status in (408, 429)


def _backoff(attempt: int) -> float:
    # Full jitter: spreads the retries of many workers after a shared outage.
    return random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**attempt))


class Writer:
    def __init__(
        self,
        influx: Influx,
        spool: Spool,
        metrics: IngestMetrics,
        *,
        spool_after_s: float,
        gzip_mode: str,
        ensure_policies: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.influx = influx
        self.spool = spool
        self.metrics = metrics
        self.spool_after_s = spool_after_s
        self.gzip_mode = gzip_mode
        self.ensure_policies = ensure_policies
        # Set when InfluxDB failed and batches go to the spool; cleared by a successful write.
        self.influx_down = False
        # Why batches are held (neither InfluxDB nor the spool takes them), for /healthz; '' when not.
        self.holding = ""
        self._loopback = any(h in influx.url for h in ("://127.", "://localhost", "://[::1]"))

    def _gzip(self, body: bytes) -> bool:
        if self.gzip_mode == "auto":
            return not self._loopback and len(body) >= GZIP_MIN_BYTES
        return self.gzip_mode == "on"

    async def _post(self, body: bytes, rp: str) -> None:
        """One write with retries for transient failures, for at most ``spool_after_s``."""
        deadline = time.monotonic() + self.spool_after_s
        attempt = 0
        zipped = self._gzip(body)
        while True:
            started = time.perf_counter()
            try:
                await self.influx.write(gzip.compress(body, 1) if zipped else body, gzip=zipped, precision="ns", rp=rp)
            except InfluxError as exc:
                self.metrics.influx_errors.labels(str(exc.status or "connect")).inc()
                if exc.status in (400, 413):
                    raise _RefusedError(exc.status, exc.body) from None
                if exc.status == 404 and "database not found" in exc.body:
                    await self._create_database()
                elif "retention policy not found" in exc.body and self.ensure_policies is not None:
                    with contextlib.suppress(InfluxError):  # made at start; InfluxDB was away, or wiped since
                        await self.ensure_policies()
                wait = exc.retry_after_s if exc.retry_after_s is not None else _backoff(attempt)
                if not _retryable(exc) and exc.status != 404:
                    log.error("InfluxDB refuses writes (%s): %s", exc.status, exc.body[:200])
                if time.monotonic() + wait > deadline:
                    raise InfluxUnavailableError(str(exc)) from None
                attempt += 1
                await asyncio.sleep(wait)
                continue
            self.metrics.write_seconds.observe(time.perf_counter() - started)
            return

    async def _create_database(self) -> None:
        try:
            await self.influx.create_database()
            log.warning("created InfluxDB database %s", self.influx.database)
        except InfluxError as exc:
            log.error("cannot create database %s: %s", self.influx.database, exc)

    async def write(self, entries: list[Entry]) -> None:
        """Settle every entry: stored, spooled or refused. Holds them (backpressure: no acknowledgement)
        while neither InfluxDB nor the spool takes them."""
        by_policy: dict[str, list[Entry]] = {}
        for e in entries:
            by_policy.setdefault(e.rp, []).append(e)
        for rp, group in by_policy.items():
            await self._write(group, rp)

    async def _write(self, entries: list[Entry], rp: str) -> None:
        body = "\n".join(line for e in entries for line in e.lines).encode()
        if not self.influx_down:
            try:
                await self._store(entries, body, rp)
                return
            except InfluxUnavailableError as exc:
                if not self.influx_down:
                    log.warning("InfluxDB unavailable, spooling to %s: %s", self.spool.folder, exc)
                self.influx_down = True
        await self._spool(entries, body, rp)

    async def _store(self, entries: list[Entry], body: bytes, rp: str) -> None:
        try:
            await self._post(body, rp)
        except _RefusedError as refused:
            if len(entries) == 1:
                self.metrics.points_refused.inc(len(entries[0].lines))
                entries[0].settle(Outcome.REFUSED, refused.body[:500])
                return
            # 413: too big; 400: a bad line somewhere. Either way halve and retry: the good half
            # is stored (InfluxDB 1.x may already have stored it; writing again overwrites).
            half = len(entries) // 2
            for part in (entries[:half], entries[half:]):
                await self._store(part, "\n".join(line for e in part for line in e.lines).encode(), rp)
            return
        points = sum(len(e.lines) for e in entries)
        self.metrics.points_written.inc(points)
        self.metrics.batch_points.observe(points)
        for e in entries:
            e.settle(Outcome.STORED)

    async def _spool(self, entries: list[Entry], body: bytes, rp: str) -> None:
        attempt = 0
        while True:
            try:
                await self.spool.append(body, rp)
                break
            except (SpoolFullError, OSError) as exc:
                # Not acknowledging is the backpressure: the broker keeps the messages queued. Both
                # ways out are tried again: InfluxDB back (the replayer notices), or the spool
                # writable again (a disk freed, a permission fixed).
                if not self.holding:
                    what = "full" if isinstance(exc, SpoolFullError) else "unwritable"
                    self.holding = f"InfluxDB away and the spool {what}: {exc}"
                    log.error("%s; holding acknowledgements until one of them takes writes", self.holding)
                attempt += 1
                await asyncio.sleep(min(BACKOFF_MAX_S, 0.1 * attempt))
                if not self.influx_down:
                    self._released()
                    await self._write(entries, rp)
                    return
        self._released()
        self.metrics.spooled_points.inc(sum(len(e.lines) for e in entries))
        self.metrics.spool_bytes.set(self.spool.bytes)
        for e in entries:
            e.settle(Outcome.SPOOLED)

    def _released(self) -> None:
        if self.holding:
            log.warning("writes go through again (%s before)", self.holding)
            self.holding = ""

    async def replay_forever(self, idle_s: float = 0.2) -> None:
        """Drain the spool into InfluxDB, oldest first; clears ``influx_down`` when InfluxDB is back."""
        attempt = 0
        while True:
            files = self.spool.files()
            if not files:
                if self.influx_down and await self.influx.ping():
                    self.influx_down = False
                await asyncio.sleep(idle_s)
                continue
            path = files[0]
            try:
                body, rp = self.spool.read(path)
                await self._replay_lines(body.split(b"\n"), rp)
                self.spool.remove(path)  # a failure here replays the file again: its points overwrite
            except InfluxUnavailableError:
                attempt += 1
                await asyncio.sleep(_backoff(attempt) + 0.2)
                continue
            except OSError as exc:
                log.error("cannot replay spool file %s (%s); trying again", path, exc)
                attempt += 1
                await asyncio.sleep(min(BACKOFF_MAX_S * 5, 0.5 * attempt))
                continue
            attempt = 0
            self.metrics.spool_bytes.set(self.spool.bytes)
            if self.influx_down:
                log.warning("InfluxDB is back; replaying the spool")
                self.influx_down = False

    async def _replay_lines(self, lines: list[bytes], rp: str) -> None:
        try:
            await self._post(b"\n".join(lines), rp)
        except _RefusedError as refused:
            if len(lines) == 1:
                # The message was acknowledged when spooled; all that is left is to count it.
                self.metrics.points_refused.inc()
                log.error("InfluxDB refused a spooled line: %s (%s)", lines[0][:200], refused.body[:200])
                return
            half = len(lines) // 2
            await self._replay_lines(lines[:half], rp)
            await self._replay_lines(lines[half:], rp)
            return
        self.metrics.points_written.inc(len(lines))
