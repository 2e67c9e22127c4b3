"""Start, watch and stop the local stack's server processes."""

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """The local stack cannot do what was asked; the message says what to do about it."""


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A port free now, for a server to bind soon: below the kernel's ephemeral range, so no outgoing
    connection's source port takes it in between (seen: a test API's port taken that way), and never
    the same one twice in a process."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200 if low > 11_000 else 0):
        port = rng.randrange(10_000, low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # no usable range below the ephemeral ports: let the kernel choose
        s.bind(("127.0.0.1", 0))
        found: int = s.getsockname()[1]
        return found


def free_port_pair() -> int:
    """A free port whose port + 2 is free too (influxd's RPC port)."""
    while True:
        port = free_port()
        if not port_open("127.0.0.1", port + 2):
            return port


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None)
    if path is None:
        hint = "run 'make up' as root, or: sudo apt-get install " + package
        raise StackError(f"{name} is not installed ({hint})")
    return path


@dataclass
class Server:
    """A server process started by the stack, known by its pid file so another CLI call can stop it."""

    name: str
    pidfile: Path
    logfile: Path
    host: str
    port: int
    stop_signal: signal.Signals = signal.SIGTERM

    def start(self, argv: list[str], timeout_s: float = 30.0, user: str | None = None) -> int:
        """``user``: run the server as this user (root starting a server that refuses root)."""
        if self.running():
            return self.pid() or 0
        if port_open(self.host, self.port):
            raise StackError(f"{self.name}: port {self.host}:{self.port} is taken by another program")
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                user=user,
            )
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if proc.poll() is not None:
                self.pidfile.unlink(missing_ok=True)
                raise StackError(
                    f"{self.name} exited with {proc.returncode} at start; see {self.logfile}:\n" + _tail(self.logfile)
                )
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(
                    f"{self.name} did not listen on {self.host}:{self.port} in {timeout_s:.0f} s; see {self.logfile}"
                )
            time.sleep(0.05)
        return proc.pid

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie child of this process counts as stopped.
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return False
        return True

    def signal(self, sig: signal.Signals) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self, timeout_s: float = 20.0) -> bool:
        """The stop signal (SIGTERM), then SIGKILL after ``timeout_s``; True when it was running."""
        if not self.running():
            self.pidfile.unlink(missing_ok=True)
            return False
        self.signal(self.stop_signal)
        deadline = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running():
            self.signal(signal.SIGKILL)
            while self.running():
                time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)
        return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
