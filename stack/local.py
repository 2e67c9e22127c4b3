"""The local stack under the run folder: ``up`` starts Mosquitto and influxd, ``down`` stops them.

Service credentials are made once and kept in ``credentials.json`` (mode 600) in the run folder;
each platform service connects with its own broker user.
"""

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from devices.estate import EstateError, load_estate
from runtime.settings import Settings
from stack.influx import InfluxLayout
from stack.mosquitto import MosquittoLayout
from stack.procs import StackError, port_open
from store.dynsec import PLATFORM_USERS, device_username, new_password, platform_dynsec
from store.influx import Influx, InfluxError


@dataclass(frozen=True)
class LocalStack:
    settings: Settings
    # Broker clients for every device of the estate, their passwords in device-credentials.json (for
    # the simulator); off for a stack whose devices are real (they are provisioned through the API).
    make_device_credentials: bool = True

    @property
    def root(self) -> Path:
        return self.settings.run_dir.resolve()

    def mosquitto(self) -> MosquittoLayout:
        mqtt = self.settings.mqtt
        if mqtt.host not in ("127.0.0.1", "localhost"):
            raise StackError(f"ESTATEWATCH_MQTT_URL points at {mqtt.host}: the local stack runs on 127.0.0.1")
        return MosquittoLayout(self.root / "mosquitto", mqtt.port)

    def influx(self) -> InfluxLayout:
        parts = urlsplit(self.settings.influx_url)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise StackError(f"ESTATEWATCH_INFLUX_URL points at {parts.hostname}: the local stack runs on 127.0.0.1")
        port = parts.port or 8086
        return InfluxLayout(self.root / "influxdb", port, rpc_port=port + 2)

    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials.json"

    def credentials(self) -> dict[str, str]:
        """The broker users' passwords, made on first use."""
        if self.credentials_file.exists():
            data: dict[str, str] = json.loads(self.credentials_file.read_text())
            if set(PLATFORM_USERS) <= data.keys():
                return data
        data = {user: new_password() for user in PLATFORM_USERS}
        self.root.mkdir(parents=True, exist_ok=True)
        self.credentials_file.touch(mode=0o600)
        self.credentials_file.chmod(0o600)  # before the passwords are in it
        self.credentials_file.write_text(json.dumps(data, indent=1))
        # New passwords mean a new dynsec file.
        self.mosquitto().dynsec.unlink(missing_ok=True)
        return data

    @property
    def device_credentials_file(self) -> Path:
        return self.root / "device-credentials.json"

    def device_credentials(self) -> dict[str, str]:
        """The estate's devices' broker passwords by username, made with the broker's first dynsec file
        (the simulator reads them: each device connects as itself)."""
        if self.device_credentials_file.exists():
            data: dict[str, str] = json.loads(self.device_credentials_file.read_text())
            return data
        return {}

    def _new_device_clients(self) -> list[tuple[str, str, str, str]]:
        if not self.make_device_credentials:
            return []
        try:
            estate = load_estate(self.settings.estate_file)
        except EstateError:
            return []  # a stack without an estate: platform users only
        site = estate.site.id
        made = [(site, d.type.value, d.id, new_password()) for d in estate.devices]
        self.root.mkdir(parents=True, exist_ok=True)
        # Passwords in clear (the simulator needs them): readable by the stack's user only, from the start.
        self.device_credentials_file.touch(mode=0o600)
        self.device_credentials_file.chmod(0o600)
        self.device_credentials_file.write_text(
            json.dumps({device_username(s, i): p for s, _, i, p in made}, indent=0)
        )
        return made

    def mqtt_url(self, user: str) -> str:
        mqtt = self.settings.mqtt
        return f"mqtt://{user}:{quote(self.credentials()[user], safe='')}@{mqtt.host}:{mqtt.port}"

    def service_env(self, user: str) -> dict[str, str]:
        """Environment for a platform service run against this stack."""
        return {
            "ESTATEWATCH_MQTT_URL": self.mqtt_url(user),
            "ESTATEWATCH_INFLUX_URL": self.settings.influx_url,
            "ESTATEWATCH_INFLUX_DATABASE": self.settings.influx_database,
            "ESTATEWATCH_DB_URL": self.settings.db_url,
            "ESTATEWATCH_ESTATE_FILE": str(self.settings.estate_file),
            "ESTATEWATCH_RUN_DIR": str(self.settings.run_dir),
        }

    def up(self) -> list[str]:
        """Start what is not running; returns one line per server, saying where it listens."""
        creds = self.credentials()
        mq = self.mosquitto()
        mq.prepare(None if mq.dynsec.exists() else platform_dynsec(creds, self._new_device_clients()))
        ifx = self.influx()
        ifx.prepare()
        lines = []
        for name, layout in (("mosquitto", mq), ("influxd", ifx)):
            server = layout.server()
            was = server.running()
            pid = layout.start()
            lines.append(
                f"{name:10} pid {pid:<7} {'already running' if was else 'started'} on "
                f"{layout.host}:{layout.port}  (log {server.logfile})"
            )
        asyncio.run(self._create_database())
        return lines

    async def _create_database(self) -> None:
        async with Influx(self.settings.influx_url, self.settings.influx_database) as db:
            for _ in range(100):
                if await db.ping():
                    break
                await asyncio.sleep(0.1)
            try:
                await db.create_database()
            except InfluxError as exc:
                raise StackError(f"cannot create database {self.settings.influx_database!r}: {exc}") from exc

    def down(self) -> list[str]:
        lines = []
        for name, layout in (("mosquitto", self.mosquitto()), ("influxd", self.influx())):
            stopped = layout.server().stop()
            lines.append(f"{name:10} {'stopped' if stopped else 'was not running'}")
        return lines

    def status(self) -> list[str]:
        lines = []
        for name, layout in (("mosquitto", self.mosquitto()), ("influxd", self.influx())):
            server = layout.server()
            state = f"running, pid {server.pid()}" if server.running() else "stopped"
            listening = "listening" if port_open(layout.host, layout.port) else "not listening"
            lines.append(f"{name:10} {state}; {layout.host}:{layout.port} {listening}")
        return lines


def is_root() -> bool:
    return os.geteuid() == 0
