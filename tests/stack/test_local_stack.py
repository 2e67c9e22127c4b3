"""``estatewatch stack up|status|down`` with real Mosquitto and influxd, in a temp run folder."""

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.estate import Estate, dump_estate
from stack.procs import free_port
from tests.support.servers import listening


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "estatewatch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {
        "ESTATEWATCH_RUN_DIR": str(tmp_path / "run"),
        "ESTATEWATCH_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "ESTATEWATCH_INFLUX_URL": f"http://127.0.0.1:{free_port()}",
        "ESTATEWATCH_INFLUX_DATABASE": "stacktest",
    }
    yield env
    cli("stack", "down", env=env)


def test_up_status_down(stack_env: dict[str, str]) -> None:
    up = cli("stack", "up", env=stack_env)
    assert up.returncode == 0, up.stderr
    assert "mosquitto" in up.stdout and "started" in up.stdout
    again = cli("stack", "up", env=stack_env)
    assert again.stdout.count("already running") == 2

    status = cli("stack", "status", env=stack_env)
    assert status.stdout.count("running, pid") == 2 and status.stdout.count(" listening") == 2
    # Every port the servers open is on loopback and in docs/operations.md (influxd's RPC: HTTP + 2).
    run = Path(stack_env["ESTATEWATCH_RUN_DIR"])
    mqtt_port = int(stack_env["ESTATEWATCH_MQTT_URL"].rsplit(":", 1)[1])
    http_port = int(stack_env["ESTATEWATCH_INFLUX_URL"].rsplit(":", 1)[1])
    mosquitto = int((run / "mosquitto" / "mosquitto.pid").read_text())
    influxd = int((run / "influxdb" / "influxd.pid").read_text())
    assert listening(mosquitto) == {("127.0.0.1", mqtt_port)}
    assert listening(influxd) == {("127.0.0.1", http_port), ("127.0.0.1", http_port + 2)}
    ops = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    assert "HTTP port + 2" in ops and "11883" in ops and "18086" in ops and "18088" in ops

    influx = stack_env["ESTATEWATCH_INFLUX_URL"]
    with urllib.request.urlopen(f"{influx}/query?" + urllib.parse.urlencode({"q": "SHOW DATABASES"})) as r:
        assert ["stacktest"] in json.load(r)["results"][0]["series"][0]["values"]

    # The broker refuses anonymous clients and accepts the stack's service users.
    env_lines = cli("stack", "status", "--env", "ingest", env=stack_env).stdout
    url = next(line.split("=", 1)[1].strip("'") for line in env_lines.splitlines() if "MQTT_URL" in line)
    parts = urllib.parse.urlsplit(url)
    assert connect(parts.port or 0, parts.username, urllib.parse.unquote(parts.password or "")) == 0
    assert connect(parts.port or 0, None, None) != 0
    creds = Path(stack_env["ESTATEWATCH_RUN_DIR"]) / "credentials.json"
    assert oct(creds.stat().st_mode & 0o777) == "0o600"

    down = cli("stack", "down", env=stack_env)
    assert down.stdout.count("stopped") == 2
    assert cli("stack", "status", env=stack_env).stdout.count("stopped") == 2


def connect(port: int, user: str | None, password: str | None, client_id: str = "") -> int:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    if user:
        client.username_pw_set(user, password)
    try:
        client.connect("127.0.0.1", port)
        rc = client.loop(timeout=2)
        for _ in range(20):
            if client.is_connected():
                return 0
            rc = client.loop(timeout=0.2)
        return rc or 1
    finally:
        client.disconnect()


def test_a_taken_port_is_a_clear_error(stack_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        env = {**stack_env, "ESTATEWATCH_MQTT_URL": f"mqtt://127.0.0.1:{s.getsockname()[1]}"}
        result = cli("stack", "up", env=env)
    assert result.returncode == 1
    assert "is taken by another program" in result.stderr


def test_make_up_starts_only_services_that_exist() -> None:
    """Every service make up starts is a real command; ingest is one of them."""
    import click

    from estatewatch.cli import main
    from stack.supervise import available_services

    services = available_services()
    assert "ingest" in [s[0] for s in services]
    for name, _, _, args in services:
        command: click.Command | None = main
        for word in (name, *args):
            assert isinstance(command, click.Group), f"make up would run 'estatewatch {name} {' '.join(args)}'"
            command = command.commands.get(word)
        assert command is not None and not isinstance(command, click.Group), f"'{name}' is not a runnable command"


def test_every_estate_device_gets_its_own_broker_client(stack_env: dict[str, str]) -> None:
    """The stack's first dynsec file holds a client per device of the estate, pinned and confined
    as the API's are; the simulator connects each device as itself."""
    up = cli("stack", "up", env=stack_env)
    assert up.returncode == 0, up.stderr
    run_dir = Path(stack_env["ESTATEWATCH_RUN_DIR"])
    passwords = json.loads((run_dir / "device-credentials.json").read_text())
    assert oct((run_dir / "device-credentials.json").stat().st_mode & 0o777) == "0o600"
    assert len(passwords) == 6160 and "luedi-south.smk-b001-u1-101" in passwords
    port = int(stack_env["ESTATEWATCH_MQTT_URL"].rsplit(":", 1)[1])
    user = "luedi-south.smk-b001-u1-101"
    assert connect(port, user, passwords[user], client_id=user) == 0
    assert connect(port, user, passwords[user], client_id="not-the-device") != 0
    assert connect(port, user, "wrong", client_id=user) != 0

    service = json.loads((run_dir / "credentials.json").read_text())
    heard: set[str] = set()
    listener = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-listener", protocol=paho.MQTTv5)
    listener.username_pw_set("ingest", service["ingest"])
    listener.on_connect = lambda c, *a: c.subscribe("estate/v1/luedi-south/radio/#", qos=1)
    listener.on_message = lambda c, u, m: heard.add(m.topic.split("/")[4])
    listener.connect("127.0.0.1", port)
    listener.loop_start()
    try:
        sim = cli("simulate", "--device-credentials", str(run_dir / "device-credentials.json"), "--type", "radio",
                  "--duration", "3", env=stack_env)  # fmt: skip
    finally:
        listener.disconnect()
        listener.loop_stop()
    assert sim.returncode == 0, sim.stderr
    totals = json.loads(sim.stderr.strip().splitlines()[-1])["simulated"]
    assert totals["devices"] == totals["statuses"] == 35, totals
    assert len(heard) == 35, "every radio published as itself on its own topics"


def test_each_run_folder_has_its_own_registry_and_device_credentials_can_be_off(tmp_path: Path) -> None:
    """Without ESTATEWATCH_DB_URL the registry is RUN_DIR/registry.db: two stacks never share one; a
    stack whose devices are real makes no device credentials file."""
    base = {"ESTATEWATCH_INFLUX_DATABASE": "stacktest"}
    envs = [
        {**base, "ESTATEWATCH_RUN_DIR": str(tmp_path / name), "ESTATEWATCH_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
         "ESTATEWATCH_INFLUX_URL": f"http://127.0.0.1:{free_port()}"}
        for name in ("one", "two")
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "ESTATEWATCH_DB_URL"}
    try:
        for e in envs:
            made = subprocess.run([sys.executable, "-m", "estatewatch", "registry", "init"], capture_output=True,
                                  text=True, env={**env, **e}, timeout=120, check=False)  # fmt: skip
            assert made.returncode == 0, made.stderr
            assert f"registry sqlite+aiosqlite:///{e['ESTATEWATCH_RUN_DIR']}/registry.db" in made.stdout
        assert (tmp_path / "one" / "registry.db").exists() and (tmp_path / "two" / "registry.db").exists()
        up = cli("stack", "up", "--no-device-credentials", env=envs[1])
        assert up.returncode == 0, up.stderr
        assert not (tmp_path / "two" / "device-credentials.json").exists()
        assert oct((tmp_path / "two" / "credentials.json").stat().st_mode & 0o777) == "0o600"
    finally:
        cli("stack", "down", env=envs[1])


def test_the_first_admin_token_is_kept_while_valid_and_renewed_once_expired(tmp_path: Path) -> None:
    import asyncio

    from sqlalchemy import update

    from runtime.settings import Settings
    from stack.local import LocalStack
    from stack.supervise import prepare_registry
    from store.registry.db import Registry
    from store.registry.schema import TokenRow

    local = LocalStack(Settings(run_dir=tmp_path / "run"), make_device_credentials=False)
    assert prepare_registry(local) == 0
    token_file = tmp_path / "run" / "admin.token"
    first = token_file.read_text().strip()
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert prepare_registry(local) == 0 and token_file.read_text().strip() == first

    async def expire() -> None:
        async with Registry(local.settings.db_url) as reg, reg.session() as s, s.begin():
            await s.execute(update(TokenRow).where(TokenRow.id == first.split("_")[1]).values(expires_ms=1))

    asyncio.run(expire())
    assert prepare_registry(local) == 0
    assert token_file.read_text().strip() not in ("", first)


def test_stack_run_reports_a_service_that_stops_and_takes_the_rest_down(
    stack_env: dict[str, str], tmp_path: Path, small: Estate
) -> None:
    """A supervisor that hides a crash is worse than none: the rules service refusing its config
    ends `stack run` with the service's own exit code, naming it and its log, and nothing is left
    running."""
    estate = tmp_path / "estate.yaml"
    estate.write_text(dump_estate(small), encoding="utf-8")
    env = {**stack_env, "ESTATEWATCH_ESTATE_FILE": str(estate), "ESTATEWATCH_API_PORT": str(free_port()),
           "ESTATEWATCH_RULES_CONFIG": str(tmp_path / "missing-rules.yaml"),
           "ESTATEWATCH_INGEST_METRICS_PORT": "0", "ESTATEWATCH_RULES_METRICS_PORT": "0"}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "estatewatch", "stack", "run", "--no-simulate", "--no-device-credentials"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "rules exited with 1; see " in run.stdout, run.stdout[-2000:]
    assert "stopped ingest" in run.stdout and "stopped api" in run.stdout
    status = cli("stack", "status", env=env)
    assert "running" not in status.stdout, status.stdout


def test_make_up_upgrades_a_registry_an_earlier_release_made(tmp_path: Path) -> None:
    """The run folder of a release before migrations: `make up` (stack run) brings its registry to
    the newest schema and keeps its devices."""
    import asyncio
    import sqlite3

    from runtime.settings import Settings
    from stack.local import LocalStack
    from stack.supervise import prepare_registry
    from store.registry import migrate
    from store.registry.db import Registry

    run = tmp_path / "run"
    run.mkdir()
    ddl = (Path(__file__).parents[1] / "store" / "legacy" / "registry-early-sqlite.sql").read_text()
    with sqlite3.connect(run / "registry.db") as db:
        db.executescript(ddl)
        db.execute("INSERT INTO sites VALUES ('luedi-south', 'old name', 'Asia/Shanghai', 31.2, 120.6, '[]')")
    local = LocalStack(Settings(run_dir=run), make_device_credentials=False)
    assert prepare_registry(local) == 0

    async def check() -> tuple[str | None, int]:
        found = await migrate.run(local.settings.db_url, migrate.revision_of)
        async with Registry(local.settings.db_url) as reg:
            return found, len(await reg.devices())

    revision, devices = asyncio.run(check())
    assert revision == migrate.head() and devices > 6000
