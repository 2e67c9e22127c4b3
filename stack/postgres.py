"""PostgreSQL from Debian's packages for the tests (and anyone who wants the production registry
locally): a cluster in a folder of its own, on a loopback port, with no Unix socket."""

import os
import pwd
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stack.procs import Server, StackError
from store.registry.pgtools import postgres_binary

# PostgreSQL refuses to run as root; as root the cluster runs as the package's own user.
SERVICE_USER = "postgres"


def _run_as() -> str | None:
    return SERVICE_USER if os.geteuid() == 0 else None


@dataclass(frozen=True)
class PostgresLayout:
    root: Path
    port: int
    host: str = "127.0.0.1"
    superuser: str = "estatewatch"
    # Off for throwaway clusters (tests): no fsync, so a test's commits cost microseconds. The
    # crash guarantees of a real deployment are PostgreSQL's own and are not what tests measure.
    durable: bool = True

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.superuser}@{self.host}:{self.port}/{database}"

    def server(self) -> Server:
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every client to leave).
        return Server("postgres", self.root / "postgres.pid", self.root / "postgres.log", self.host, self.port,
                      stop_signal=signal.SIGINT)  # fmt: skip

    def prepare(self) -> None:
        """Make the cluster once (initdb); later calls find it and do nothing."""
        self.root.mkdir(parents=True, exist_ok=True)
        user = _run_as()
        if user is not None:
            self._hand_to(user)
        if (self.data / "PG_VERSION").exists():
            return
        argv = [postgres_binary("initdb"), "-D", str(self.data), "-U", self.superuser, "--auth=trust",
                "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"]  # fmt: skip
        if not self.durable:
            argv.append("--no-sync")
        done = subprocess.run(argv, user=user, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def _hand_to(self, user: str) -> None:
        entry = pwd.getpwnam(user)
        for parent in self.root.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                raise StackError(
                    f"{self.root}: PostgreSQL runs as {user}, who cannot reach it ({parent} is closed to others);"
                    " put the cluster under a folder others may enter, such as /tmp"
                )
        os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def start(self) -> int:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "300",
            "logging_collector": "off",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        argv = [postgres_binary("postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return self.server().start(argv, timeout_s=60, user=_run_as())

    def psql(self, sql: str, database: str = "postgres") -> str:
        """One statement through psql (tests and backups use the server's own tools)."""
        argv = [postgres_binary("psql"), "-h", self.host, "-p", str(self.port), "-U", self.superuser, "-d", database,
                "-v", "ON_ERROR_STOP=1", "-qAtc", sql]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"psql: {done.stderr.strip()}")
        return done.stdout

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)
