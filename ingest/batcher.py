"""Entries into batches, by size and by age; a few writer tasks take batches to InfluxDB."""

import asyncio
import time

from ingest.writer import Entry, Writer


class Batcher:
    """Memory stays bounded without a bounded queue here: every entry is an unacknowledged message,
    and the broker sends a worker at most its Receive Maximum of those."""

    def __init__(self, writer: Writer, batch_size: int, batch_ms: int) -> None:
        self.writer = writer
        self.batch_size = batch_size
        self.batch_s = batch_ms / 1000
        self._entries: list[Entry] = []
        self._lines = 0
        self._since = 0.0
        self._queue: asyncio.Queue[list[Entry]] = asyncio.Queue()
        self._wake = asyncio.Event()

    def add(self, entry: Entry) -> None:
        if not self._entries:
            self._since = time.monotonic()
            self._wake.set()
        self._entries.append(entry)
        self._lines += len(entry.lines)
        if self._lines >= self.batch_size:
            self._cut()

    def _cut(self) -> None:
        if self._entries:
            self._queue.put_nowait(self._entries)
            self._entries, self._lines = [], 0

    async def flush_forever(self) -> None:
        while True:
            if not self._entries:
                self._wake.clear()
                await self._wake.wait()
            wait = self._since + self.batch_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._entries and time.monotonic() - self._since >= self.batch_s:
                self._cut()

    async def write_forever(self) -> None:
        while True:
            batch = await self._queue.get()
            try:
                await self.writer.write(batch)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Hand everything accepted so far to the writers and wait until it is settled."""
        self._cut()
        await self._queue.join()
