"""Mosquitto for the local stack and the tests: config, dynamic-security file, process."""

import getpass
from dataclasses import dataclass
from pathlib import Path

from devices.catalog import MAX_PAYLOAD_BYTES
from stack.procs import Server, StackError, require_binary
from store.dynsec import DynsecFile

DYNSEC_PLUGINS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
)
# Mosquitto 2.0.11 drops anything past 1,000 queued messages per client silently, and "0"
# (unlimited) was buggy before 2.0.22: a large finite queue keeps a slow ingest's backlog.
MAX_QUEUED_MESSAGES = 1_000_000
# Room for a maximum payload plus topic, properties and headers.
MAX_PACKET_SIZE = MAX_PAYLOAD_BYTES + 4096


def dynsec_plugin() -> str:
    for path in DYNSEC_PLUGINS:
        if Path(path).exists():
            return path
    raise StackError("mosquitto's dynamic-security plugin is missing (sudo apt-get install mosquitto)")


@dataclass(frozen=True)
class MosquittoLayout:
    root: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def dynsec(self) -> Path:
        return self.root / "dynamic-security.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def server(self) -> Server:
        return Server("mosquitto", self.root / "mosquitto.pid", self.root / "mosquitto.log", self.host, self.port)

    def render(self) -> str:
        return "\n".join(
            [
                "# Written by estatewatch; edits are overwritten on the next start.",
                "per_listener_settings false",
                f"listener {self.port} {self.host}",
                "allow_anonymous false",
                f"plugin {dynsec_plugin()}",
                f"plugin_opt_config_file {self.dynsec}",
                # Project-local folders belong to whoever runs the stack; keep that user.
                f"user {getpass.getuser()}",
                "persistence true",
                f"persistence_location {self.data}/",
                "autosave_interval 10",
                f"max_queued_messages {MAX_QUEUED_MESSAGES}",
                "max_queued_bytes 0",
                "max_inflight_messages 100",
                f"max_packet_size {MAX_PACKET_SIZE}",
                "set_tcp_nodelay true",
                "log_dest stdout",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                "connection_messages false",
                "",
            ]
        )

    def prepare(self, users: DynsecFile | None) -> None:
        """Write the config; write the dynsec file only when given (it holds live state after a start)."""
        self.data.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.render())
        if users is not None:
            users.write(self.dynsec)
        elif not self.dynsec.exists():
            raise StackError(f"{self.dynsec} is missing: the broker would start with no users")

    def start(self) -> int:
        return self.server().start([require_binary("mosquitto", "mosquitto"), "-c", str(self.conf)])
