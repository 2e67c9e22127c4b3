"""influxd 1.x for the local stack and the tests: config and process."""

from dataclasses import dataclass
from pathlib import Path

from stack.procs import Server, require_binary


@dataclass(frozen=True)
class InfluxLayout:
    root: Path
    port: int
    rpc_port: int
    host: str = "127.0.0.1"

    @property
    def conf(self) -> Path:
        return self.root / "influxdb.conf"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def server(self) -> Server:
        return Server("influxd", self.root / "influxd.pid", self.root / "influxd.log", self.host, self.port)

    def render(self) -> str:
        return f"""# Written by estatewatch; edits are overwritten on the next start.
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{self.root}/meta"

[data]
  dir = "{self.root}/data"
  wal-dir = "{self.root}/wal"
  index-version = "tsi1"
  query-log-enabled = false
  # fsync per write is what "stored" means to ingest; batching keeps it affordable.
  wal-fsync-delay = "0s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = false
  log-enabled = false
  write-tracing = false
  max-body-size = 25000000

[logging]
  level = "warn"
  suppress-logo = true

[subscriber]
  enabled = false

[continuous_queries]
  log-enabled = false
"""

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.render())

    def start(self) -> int:
        return self.server().start([require_binary("influxd", "influxdb"), "-config", str(self.conf)], timeout_s=60)
