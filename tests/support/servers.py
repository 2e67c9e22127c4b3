"""Real mosquitto and influxd processes on free ports in temp dirs, for tests."""

import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stack.influx import InfluxLayout
from stack.mosquitto import MosquittoLayout
from stack.postgres import PostgresLayout
from stack.procs import free_port
from store.dynsec import DYNSEC_ADMIN_ROLE, SERVICE_ROLE, SIMULATOR_ROLE, Client, DynsecFile

# Tests use plain role-named users; the platform's users (store.dynsec.PLATFORM_USERS) are tested
# through the local stack.
USERS = {"admin": ("admin",), "service": ("service",), "simulator": ("simulator",), "api": ("service", "admin")}
PASSWORD = "test-password"


@dataclass
class Broker:
    layout: MosquittoLayout

    @property
    def port(self) -> int:
        return self.layout.port

    def url(self, user: str = "service") -> str:
        return f"mqtt://{user}:{PASSWORD}@127.0.0.1:{self.port}"

    def start(self) -> None:
        self.layout.start()

    def stop(self) -> None:
        self.layout.server().stop()

    def kill(self) -> None:
        import signal

        server = self.layout.server()
        server.signal(signal.SIGKILL)
        while server.running():
            time.sleep(0.02)
        server.pidfile.unlink(missing_ok=True)


def start_broker(root: Path) -> Broker:
    layout = MosquittoLayout(root, free_port())
    layout.prepare(
        DynsecFile(
            roles=[DYNSEC_ADMIN_ROLE, SERVICE_ROLE, SIMULATOR_ROLE],
            clients=[Client(u, PASSWORD, r) for u, r in USERS.items()],
        )
    )
    broker = Broker(layout)
    broker.start()
    return broker


@dataclass
class InfluxServer:
    layout: InfluxLayout

    @property
    def url(self) -> str:
        return self.layout.url

    def stop(self) -> None:
        self.layout.server().stop()

    def start(self) -> None:
        self.layout.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as r:
                    if r.status == 204:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("influxd did not answer /ping")

    def query(self, db: str, q: str) -> list[dict[str, object]]:
        """Synchronous InfluxQL for assertions: rows of the first statement's series, tags merged in."""
        data = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ms"}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=30) as r:
            result = json.load(r)["results"][0]
        if "error" in result:
            raise RuntimeError(result["error"])
        rows = []
        for s in result.get("series", []):
            for v in s["values"]:
                rows.append({**(s.get("tags") or {}), **dict(zip(s["columns"], v, strict=True))})
        return rows

    def create_database(self, db: str) -> None:
        data = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}).encode()
        urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10).close()


def start_influx(root: Path) -> InfluxServer:
    layout = InfluxLayout(root, free_port(), free_port())
    layout.prepare()
    server = InfluxServer(layout)
    server.start()
    return server


@dataclass
class PostgresServer:
    layout: PostgresLayout
    _made: int = 0

    def new_database(self) -> str:
        """A database of its own for one test: its URL."""
        self._made += 1
        return self.layout.create_database(f"t{self._made}")

    def stop(self) -> None:
        self.layout.server().stop()

    def start(self) -> None:
        self.layout.start()


def start_postgres() -> PostgresServer:
    """A throwaway cluster (no fsync) in a folder of /tmp: as root, PostgreSQL runs as its own user,
    who must be able to reach the folder (pytest's own temp folders are closed to others)."""
    import tempfile

    layout = PostgresLayout(Path(tempfile.mkdtemp(prefix="estatewatch-pg-")), free_port(), durable=False)
    layout.prepare()
    server = PostgresServer(layout)
    server.start()
    return server


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs a process listens on, TCP, read from /proc (no tools needed)."""
    import socket
    import struct

    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            addr, port = fields[1].split(":")
            raw = bytes.fromhex(addr)
            words = struct.unpack(f"<{len(raw) // 4}I", raw)  # the kernel prints each 32-bit word in host order
            out.add((socket.inet_ntop(family, struct.pack(f">{len(words)}I", *words)), int(port, 16)))
    return out
