"""Which device a Locust user becomes: a counter per device type shared by the processes of one run.

Locust's ``--processes`` forks workers that each spawn their share of every user class; a locked
counter file in the run folder hands each new user the next device of its type, so no device is
played twice whichever worker spawns it.
"""

import fcntl
import os
from pathlib import Path


def claim(folder: Path, key: str) -> int:
    """The next index (0, 1, 2...) for ``key``, unique across the processes sharing ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{key}.count", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 32)
        index = int(raw) if raw.strip() else 0
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(index + 1).encode())
        return index
    finally:
        os.close(fd)  # closing releases the lock
