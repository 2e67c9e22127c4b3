"""Where PostgreSQL's programs are: Debian installs them under /usr/lib/postgresql/<major>/bin,
off the PATH; the newest major wins (pg_dump must be at least the server's version)."""

import shutil
from pathlib import Path

_DEBIAN_ROOT = Path("/usr/lib/postgresql")


class ToolMissingError(RuntimeError):
    pass


def postgres_binary(name: str) -> str:
    found = sorted((p for p in _DEBIAN_ROOT.glob(f"*/bin/{name}") if p.parts[-3].isdigit()),
                   key=lambda p: int(p.parts[-3]))  # fmt: skip
    path = str(found[-1]) if found else shutil.which(name)
    if path is None:
        raise ToolMissingError(f"{name} is not installed (sudo apt-get install postgresql)")
    return path
