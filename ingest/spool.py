"""A disk spool of line-protocol batches, for while InfluxDB is away.

A batch is durable once ``append`` returns: written to a temp file, fsynced, renamed, and the folder
fsynced. Replay goes in file order, so batches reach InfluxDB in the order they were spooled. A batch
for a retention policy other than the default says so in its name (``000000000007.rejects.lp``).
"""

import asyncio
import contextlib
import os
from pathlib import Path


class SpoolFullError(RuntimeError):
    pass


class Spool:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.tmp"):  # a crash mid-append: never acknowledged, so redelivered
            stale.unlink()
        files = self.files()
        self._next = int(files[-1].name.split(".")[0]) + 1 if files else 1
        self.bytes = sum(f.stat().st_size for f in files)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.lp"))

    @property
    def depth(self) -> int:
        return len(self.files())

    def __bool__(self) -> bool:
        return self.bytes > 0 or bool(self.files())

    def _append_sync(self, body: bytes, rp: str) -> Path:
        path = self.folder / (f"{self._next:012d}.{rp}.lp" if rp else f"{self._next:012d}.lp")
        self._next += 1
        tmp = path.with_suffix(".tmp")
        try:
            with tmp.open("wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            tmp.rename(path)
        except OSError:
            with contextlib.suppress(OSError):  # a full disk must not also keep the half-written file
                tmp.unlink()
            raise
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    async def append(self, body: bytes, rp: str = "") -> Path:
        """Raises SpoolFullError past the limit, OSError when the folder cannot be written."""
        if self.bytes + len(body) > self.max_bytes:
            raise SpoolFullError(f"spool {self.folder} holds {self.bytes} bytes, limit {self.max_bytes}")
        path = await asyncio.to_thread(self._append_sync, body, rp)
        self.bytes += len(body)
        return path

    def read(self, path: Path) -> tuple[bytes, str]:
        """A batch and its retention policy ('' for the default)."""
        parts = path.name.split(".")
        return path.read_bytes(), parts[1] if len(parts) == 3 else ""

    def remove(self, path: Path) -> None:
        size = path.stat().st_size
        path.unlink()
        self.bytes = max(0, self.bytes - size)
