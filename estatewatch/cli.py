"""``estatewatch``: one command, a subcommand per job."""

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from api.settings import ApiSettings
from devices.estate import EstateError, load_estate
from devices.types import DeviceType
from estatewatch.options import all_settings, setting, settings_from
from grafana.settings import GrafanaSettings
from ingest.config import IngestSettings
from load.settings import LoadSettings
from rules.settings import RulesSettings
from runtime.logs import setup_logging
from runtime.settings import Settings, parse_mqtt_url
from sim.behaviours import sample_devices
from sim.incidents import Incident, IncidentError, IncidentKind
from stack.procs import StackError
from store.influx import InfluxError
from store.registry.db import Registry
from store.tokens import Role

estate_option = click.option(
    "--estate",
    "estate_file",
    type=click.Path(path_type=Path),
    default=None,
    help="estate YAML [env ESTATEWATCH_ESTATE_FILE]",
)


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _device_passwords(path: Path | None, site: str, devices: list[Any]) -> dict[str, str] | None:
    if path is None:
        return None
    from store.dynsec import device_username

    try:
        passwords: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"{path}: cannot read device credentials: {exc}")
    missing = [d.id for d in devices if device_username(site, d.id) not in passwords]
    if missing:
        _fail(f"{path} has no password for {len(missing)} device(s), e.g. {missing[0]}: is it this estate's?")
    return passwords


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """EstateWatch: IoT telemetry for residential estates (MQTT -> InfluxDB, rules, alerts)."""
    logging.basicConfig(
        level=os.environ.get("ESTATEWATCH_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("gmqtt").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)


# -- registry and devices ----------------------------------------------------------------------


@main.group()
def registry() -> None:
    """The registry database: the estate and its devices."""


@registry.command("init")
@estate_option
@click.option(
    "--device-credentials",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="record the broker usernames of the devices this file (make up's) has passwords for",
)
@setting("db_url")
def registry_init(estate_file: Path | None, device_credentials: Path | None, **values: Any) -> None:
    """Load an estate file into the registry (idempotent: run it again after editing the file)."""
    from store.devices import DeviceAdmin
    from store.dynsec import device_username

    settings = settings_from({"estate_file": estate_file, **values}, Settings)
    try:
        estate = load_estate(settings.estate_file)
    except EstateError as exc:
        _fail(str(exc))
    usernames: dict[str, str] = {}
    if device_credentials is not None and device_credentials.exists():
        known = json.loads(device_credentials.read_text())
        usernames = {d.id: u for d in estate.devices if (u := device_username(estate.site.id, d.id)) in known}

    async def load() -> None:
        async with Registry(settings.db_url) as reg:
            r = await reg.load_estate(estate)
            if usernames:
                await DeviceAdmin(reg).record_usernames(estate.site.id, usernames)
        click.echo(
            f"registry {settings.db_url}: site {r.site}: {r.devices_added} devices added, "
            f"{r.devices_updated} updated, {r.devices_unchanged} unchanged"
            + (f", {r.devices_kept} not in the file kept" if r.devices_kept else "")
        )

    asyncio.run(load())


@main.group()
def devices() -> None:
    """Devices in the registry."""


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--type", "device_type", type=click.Choice([t.value for t in DeviceType]), default=None)
@click.option("--site", default=None, help="only this site")
@setting("db_url")
def devices_list(as_json: bool, device_type: str | None, site: str | None, **values: Any) -> None:
    """List devices with their type, site, building, unit and zone."""
    settings = settings_from(values, Settings)

    async def fetch() -> list[dict[str, Any]]:
        async with Registry(settings.db_url) as reg:
            found = await reg.devices(site=site, device_type=DeviceType(device_type) if device_type else None)
        return [d.as_json() for d in found]

    rows = asyncio.run(fetch())
    if not rows:
        click.echo("no devices (load an estate with: estatewatch registry init)", err=True)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False))
        else:
            click.echo(
                f"{row['site']:14} {row['type']:16} {row['id']:24} building={row['building'] or '-':6} "
                f"unit={row['unit'] or '-':10} zone={row['zone'] or '-'}"
            )


# -- simulator ---------------------------------------------------------------------------------


@main.command()
@estate_option
@setting("mqtt_url")
@click.option(
    "--rate-scale",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="multiply every device's reporting and event rate",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="estate seconds per real second (60 plays an hour a minute)",
)
@click.option(
    "--start",
    "start_iso",
    default=None,
    metavar="ISO-TIME",
    help="estate clock at start, e.g. 2026-12-01T19:00+08:00 (default: now)",
)
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="stop after this many real seconds")
@click.option("--seed", type=int, default=1, show_default=True, help="same seed, same traffic")
@click.option(
    "--incident",
    "incidents",
    multiple=True,
    metavar="KIND[:TARGET]",
    help=f"inject an incident: {', '.join(k.value for k in IncidentKind)}; repeatable",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="split the devices over this many processes",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="simulate only the first N devices")
@click.option(
    "--type",
    "types",
    multiple=True,
    type=click.Choice([t.value for t in DeviceType]),
    help="simulate only these device types; repeatable",
)
@click.option(
    "--record",
    type=click.Path(path_type=Path),
    default=None,
    help="also write what is sent as JSON lines (the 'rules replay' format)",
)
@click.option(
    "--device-credentials",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="JSON of each device's broker password by username (make up's .run/device-credentials.json): "
    "every device connects as itself",
)
@click.option(
    "--progress-every",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="seconds between progress lines",
)
def simulate(
    estate_file: Path | None,
    rate_scale: float,
    speed: float,
    start_iso: str | None,
    duration: float | None,
    seed: int,
    incidents: tuple[str, ...],
    processes: int,
    limit: int | None,
    types: tuple[str, ...],
    record: Path | None,
    device_credentials: Path | None,
    progress_every: float,
    **values: Any,
) -> None:
    """Play every device of an estate against the broker, each as its own MQTT client."""
    import datetime as dt

    from sim.main import simulate as run
    from sim.runner import SimOptions

    settings = settings_from({"estate_file": estate_file, **values}, Settings)
    try:
        estate = load_estate(settings.estate_file)
        parsed = tuple(Incident.parse(i) for i in incidents)
    except (EstateError, IncidentError) as exc:
        _fail(str(exc))
    start_ms = None
    if start_iso:
        try:
            start = dt.datetime.fromisoformat(start_iso)
        except ValueError:
            _fail(f"--start {start_iso!r} is not an ISO time like 2026-12-01T19:00+08:00")
        start_ms = int((start if start.tzinfo else start.replace(tzinfo=estate.site.tz)).timestamp() * 1000)
    chosen = sample_devices([d for d in estate.devices if not types or d.type.value in types], limit)
    options = SimOptions(
        mqtt=parse_mqtt_url(settings.mqtt_url),
        seed=seed,
        rate_scale=rate_scale,
        speed=speed,
        duration_s=duration,
        start_ms=start_ms,
        incidents=parsed,
        record=record,
        device_passwords=_device_passwords(device_credentials, estate.site.id, chosen),
    )
    who = "each device as itself" if options.device_passwords is not None else f"as {options.mqtt.username}"
    click.echo(
        f"sim: {len(chosen)} devices of {estate.site.id} -> {options.mqtt.host}:{options.mqtt.port} ({who}) "
        f"in {processes} process(es); Ctrl-C stops",
        err=True,
    )
    try:
        totals = run(settings.estate_file, chosen, options, processes=processes, every_s=progress_every)
    except (ConnectionError, IncidentError, RuntimeError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        totals = {}
    click.echo(json.dumps({"simulated": totals}), err=True)


# -- services ----------------------------------------------------------------------------------


def _serve(make: Any, extra: dict[str, Any]) -> None:
    """Run a service until SIGTERM or Ctrl-C; exit 1 when one of its tasks failed, so that a
    supervisor can tell a crash from a stop."""
    from runtime.service import serve

    try:
        code = serve(make, extra)
    except ConnectionError as exc:
        _fail(str(exc))
    sys.exit(code)


@main.command()
@all_settings(IngestSettings)
def ingest(**values: Any) -> None:
    """MQTT -> InfluxDB: every accepted reading stored once; SIGTERM drains, then exits."""
    from ingest.service import IngestService

    settings = settings_from(values, IngestSettings)
    setup_logging(settings.log_level, settings.log_format)

    extra = {"broker": settings.mqtt.url(), "influx": settings.influx_url, "metrics_port": settings.ingest_metrics_port}
    _serve(lambda: IngestService(settings), extra)


@main.command()
@click.argument("url", default="http://127.0.0.1:9102/healthz")
@click.option("--timeout", type=float, default=5.0, show_default=True)
def health(url: str, timeout: float) -> None:
    """Exit 0 when a service's /healthz answers 200 (for container healthchecks)."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        _fail(f"{url}: {exc}")
    click.echo(response.text.strip())
    if response.status_code != 200:
        sys.exit(1)


# -- rules -------------------------------------------------------------------------------------


@main.group()
def rules() -> None:
    """The rules engine."""


@rules.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@estate_option
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="rules config over the shipped defaults (rules/defaults.yaml)",
)
def rules_replay(file: Path, estate_file: Path | None, config_file: Path | None) -> None:
    """Run JSON lines {"topic", "payload"} through the engine with their own timestamps as the clock;
    print one JSON line per alert change (no broker, no notifiers)."""
    from rules.config import ConfigError, RulesConfig
    from rules.engine import Engine
    from rules.replay import ReplayError, replay

    settings = settings_from({"estate_file": estate_file}, Settings)
    try:
        estate = load_estate(settings.estate_file)
        engine = Engine(estate, RulesConfig.load(config_file))
        for change in replay(engine, file):
            click.echo(json.dumps(change, ensure_ascii=False))
    except (EstateError, ConfigError, ReplayError) as exc:
        _fail(str(exc))
    ignored = ", ".join(f"{k} {v}" for k, v in sorted(engine.ignored.items())) or "none"
    click.echo(f"replay: {engine.processed} readings, {engine.late} late, ignored: {ignored}", err=True)


@rules.command("run")
@all_settings(RulesSettings)
def rules_run(**values: Any) -> None:
    """The live engine: broker stream in, alerts to the registry, InfluxDB, MQTT and robots."""
    from rules.config import ConfigError
    from rules.service import RulesService

    settings = settings_from(values, RulesSettings)
    setup_logging(settings.log_level, settings.log_format)
    extra = {"broker": settings.mqtt.url(), "influx": settings.influx_url, "metrics_port": settings.rules_metrics_port}
    try:
        _serve(lambda: RulesService(settings), extra)
    except (EstateError, ConfigError) as exc:
        _fail(str(exc))


# -- api ---------------------------------------------------------------------------------------


@main.command()
@all_settings(ApiSettings)
def api(**values: Any) -> None:
    """The HTTP API (and the grid workers' page at /page); SIGTERM finishes requests, then exits."""
    import uvicorn

    from api.app import create_app

    settings = settings_from(values, ApiSettings)
    setup_logging(settings.log_level, settings.log_format)
    logging.getLogger("estatewatch.api").info(
        "api listening", extra={"url": f"http://{settings.api_host}:{settings.api_port}/api/v1/docs"}
    )
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,  # the app logs requests itself, without query strings or headers
        timeout_graceful_shutdown=int(settings.drain_s),
        # uvicorn's 5 s default closes a phone's connection between two polls, and a request sent as
        # it closes fails (seen in the load test): idle connections outlive the polling interval.
        timeout_keep_alive=settings.api_keep_alive_s,
    )


@main.group()
def tokens() -> None:
    """API tokens: the first admin token, and tokens for people and vendors."""


@tokens.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", required=True, help="who holds it (shows in audit trails)")
@click.option("--grid", "grids", multiple=True, help="a grid_worker's grid (repeat for more)")
@click.option("--vendor", default=None, help="a vendor token's vendor id")
@click.option(
    "--expires", default="90d", show_default=True, help="how long it works (90d, 12h, 2w), or never (admin only)"
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="also write it to this file (mode 600)")
@setting("db_url")
def tokens_create(
    role: str, name: str, grids: tuple[str, ...], vendor: str | None, expires: str, out: Path | None, **values: Any
) -> None:
    """Make a token; it is printed once (only its hash is kept)."""
    from store.tokens import TokenError, TokenStore, parse_expiry

    settings = settings_from(values, Settings)

    async def make() -> str:
        async with Registry(settings.db_url) as reg:
            days = parse_expiry(expires)
            token, _ = await TokenStore(reg).create(Role(role), name, grids=list(grids), vendor=vendor,
                                                    expires_days=days)  # fmt: skip
            return token

    try:
        token = asyncio.run(make())
    except TokenError as exc:
        _fail(str(exc))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch(mode=0o600)
        out.chmod(0o600)
        out.write_text(token + "\n")
    click.echo(token)


def _when(ms: int | None, none: str) -> str:
    import datetime as dt

    if ms is None:
        return none
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@setting("db_url")
def tokens_list(as_json: bool, **values: Any) -> None:
    """Tokens, without their secrets: role, state, expiry and last use."""
    import time

    from store.tokens import TokenStore

    settings = settings_from(values, Settings)

    async def read() -> list[Any]:
        async with Registry(settings.db_url) as reg:
            return await TokenStore(reg).list()

    now = int(time.time() * 1000)
    for info in asyncio.run(read()):
        p = info.principal
        expired = info.expires_ms is not None and info.expires_ms <= now
        state = "revoked" if info.revoked_ms else "expired" if expired else "active"
        limits = ",".join(sorted(p.grids)) or p.vendor or ""
        if as_json:
            click.echo(json.dumps({"id": p.token_id, "role": p.role.value, "name": p.name, "state": state,
                                   "grids": sorted(p.grids), "vendor": p.vendor, "created_ms": info.created_ms,
                                   "expires_ms": info.expires_ms, "last_used_ms": info.last_used_ms},
                                  ensure_ascii=False))  # fmt: skip
            continue
        click.echo(
            f"{p.token_id}  {p.role.value:<11} {state:<8} expires {_when(info.expires_ms, 'never'):<20} "
            f"last used {_when(info.last_used_ms, 'never'):<20} {p.name}  {limits}"
        )


@tokens.command("revoke")
@click.argument("token_id")
@setting("db_url")
def tokens_revoke(token_id: str, **values: Any) -> None:
    """Revoke a token by its id (the part after ew_); API processes stop trusting it within their cache time."""
    from store.tokens import TokenStore

    settings = settings_from(values, Settings)

    async def revoke() -> bool:
        async with Registry(settings.db_url) as reg:
            return await TokenStore(reg).revoke(token_id)

    if not asyncio.run(revoke()):
        _fail(f"no active token {token_id!r}")
    click.echo(f"revoked {token_id}")


# -- broker ------------------------------------------------------------------------------------


@main.group()
def broker() -> None:
    """Mosquitto set-up for deployments."""


@broker.command("init-dynsec")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="dynamic-security JSON file to write")
@click.option("--keep-existing", is_flag=True, help="do nothing when the file exists (the broker owns it then)")
def broker_init_dynsec(out: Path, keep_existing: bool) -> None:
    """Write the broker's first dynamic-security file; passwords from MQTT_<USER>_PASSWORD variables."""
    from store.dynsec import PLATFORM_USERS, platform_dynsec

    if keep_existing and out.exists():
        click.echo(f"{out} exists; left as it is")
        return
    passwords = {u: os.environ.get(f"MQTT_{u.upper()}_PASSWORD", "") for u in PLATFORM_USERS}
    missing = [f"MQTT_{u.upper()}_PASSWORD" for u, p in passwords.items() if not p]
    if missing:
        _fail(f"set {', '.join(missing)}")
    platform_dynsec(passwords).write(out)
    click.echo(f"wrote {out} with users {', '.join(PLATFORM_USERS)}")


# -- local stack -------------------------------------------------------------------------------


@main.group()
def stack() -> None:
    """The local stack: Mosquitto and InfluxDB from Debian packages, data under the run folder."""


def _stack(values: dict[str, Any], device_credentials: bool = True) -> Any:
    from stack.local import LocalStack

    return LocalStack(settings_from(values, Settings), make_device_credentials=device_credentials)


device_credentials_option = click.option(
    "--device-credentials/--no-device-credentials",
    default=True,
    show_default=True,
    help="on the broker's first start, make a broker client for every device of the estate and write their "
    "passwords to RUN_DIR/device-credentials.json (mode 600) for the simulator; off when the devices are real",
)


def _stack_options(f: Any) -> Any:
    for field in ("run_dir", "influx_database", "influx_url", "mqtt_url"):
        f = setting(field)(f)
    return f


@stack.command("up")
@_stack_options
@device_credentials_option
def stack_up(device_credentials: bool, **values: Any) -> None:
    """Start Mosquitto and influxd in the background (no-op for what already runs)."""
    try:
        for line in _stack(values, device_credentials).up():
            click.echo(line)
    except StackError as exc:
        _fail(str(exc))


@stack.command("down")
@_stack_options
def stack_down(**values: Any) -> None:
    """Stop Mosquitto and influxd (data stays in the run folder)."""
    for line in _stack(values).down():
        click.echo(line)


@stack.command("status")
@click.option(
    "--env",
    "show_env",
    type=click.Choice(["ingest", "rules", "api", "simulator"]),
    default=None,
    help="print the environment that service needs, as shell exports",
)
@_stack_options
def stack_status(show_env: str | None, **values: Any) -> None:
    """Show what runs where."""
    local = _stack(values)
    if show_env:
        for k, v in local.service_env(show_env).items():
            click.echo(f"export {k}='{v}'")
        return
    for line in local.status():
        click.echo(line)


@stack.command("run")
@_stack_options
@setting("db_url")
@estate_option
@click.option("--simulate/--no-simulate", default=True, show_default=True, help="also run the simulator")
@click.option("--sim-args", default="", help="extra flags for the simulator, e.g. '--rate-scale 3'")
@device_credentials_option
def stack_run(
    estate_file: Path | None, simulate: bool, sim_args: str, device_credentials: bool, **values: Any
) -> None:
    """Everything in the foreground: stack, registry, services and the simulator; Ctrl-C stops all."""
    from stack.supervise import run_everything

    settings = settings_from({"estate_file": estate_file, **values}, Settings)
    try:
        code = run_everything(
            settings, simulate=simulate, sim_args=sim_args.split(), device_credentials=device_credentials
        )
    except (StackError, EstateError) as exc:
        _fail(str(exc))
    sys.exit(code)


# -- grafana -----------------------------------------------------------------------------------


@main.group()
def grafana() -> None:
    """Grafana boards (grafana/dashboards, generated by `python -m grafana.build`)."""


@grafana.command("sync")
@all_settings(GrafanaSettings)
def grafana_sync(**values: Any) -> None:
    """Push the InfluxDB data source, the EstateWatch folder and every board into a running Grafana
    (one not provisioned from files); idempotent, and says what changed."""
    from grafana.sync import InfluxSource, SyncError, sync

    s = settings_from(values, GrafanaSettings)
    if not s.grafana_token:
        _fail("no Grafana token: pass --grafana-token or set ESTATEWATCH_GRAFANA_TOKEN (a service-account token)")
    source = InfluxSource(s.grafana_influx_url, s.influx_database, s.grafana_influx_user, s.grafana_influx_password)
    try:
        report = sync(s.grafana_url, s.grafana_token, source)
    except SyncError as exc:
        _fail(str(exc))
    for line in report.lines():
        click.echo(line)
    click.echo(f"{report.changed} of {len(report.changes)} changed in {s.grafana_url}", err=True)


# -- benchmarks --------------------------------------------------------------------------------


@main.group()
def bench() -> None:
    """Benchmarks on the local stack; each prints figures against baselines measured in the same run."""


@bench.command("rules")
@click.option(
    "--hours", type=click.FloatRange(min=1), default=6.0, show_default=True, help="estate hours through the engine"
)
@click.option("--latency-seconds", type=click.FloatRange(min=5), default=60.0, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="also write the figures as JSON")
@_stack_options
@setting("estate_file")
def bench_rules(hours: float, latency_seconds: float, json_out: Path | None, **values: Any) -> None:
    """The engine's events/s with every rule on the full reference estate, its RSS, and fire/SOS
    event-to-notification latency at the estate's live load."""
    from bench.rules_bench import report, run, save

    settings = settings_from(values, Settings)
    results = asyncio.run(run(settings, hours, latency_seconds, lambda line: click.echo(line, err=True)))
    click.echo(report(results))
    if json_out:
        save(results, json_out)


@bench.command("api")
@click.option("--rate", type=click.FloatRange(min=1), default=200.0, show_default=True, help="requests per second")
@click.option("--seconds", type=click.FloatRange(min=5), default=30.0, show_default=True, help="per measurement")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="also write the figures as JSON")
@_stack_options
@setting("estate_file")
def bench_api(rate: float, seconds: float, json_out: Path | None, **values: Any) -> None:
    """The API's p50/p99 for the alert list and latest readings at a steady rate on the full estate,
    against /healthz and InfluxDB alone in the same run."""
    from bench.api_bench import report, run, save

    settings = settings_from(values, Settings)
    results = asyncio.run(run(settings, rate, seconds, lambda line: click.echo(line, err=True)))
    click.echo(report(results))
    if json_out:
        save(results, json_out)


@bench.command("ingest")
@click.option(
    "--messages",
    type=click.IntRange(min=1000),
    default=200_000,
    show_default=True,
    help="messages for the drain and write measurements",
)
@click.option("--latency-seconds", type=click.FloatRange(min=1), default=20.0, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="ingest workers sharing the stream in the sustained-rate measurement",
)
@click.option(
    "--poison-share",
    type=click.FloatRange(0, 0.5),
    default=0.0,
    show_default=True,
    help="also drain the backlog with this share of bad messages from one device, e.g. 0.1",
)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="also write the figures as JSON")
@_stack_options
@setting("db_url")
def bench_ingest(
    messages: int, latency_seconds: float, workers: int, poison_share: float, json_out: Path | None, **values: Any
) -> None:
    """Ingest's sustained rate, CPU, RSS and latency against raw Mosquitto and InfluxDB rates."""
    from bench.ingest_bench import report, run, save

    settings = settings_from(values, Settings)
    results = asyncio.run(
        run(settings, messages, latency_seconds, workers, lambda line: click.echo(line, err=True), poison_share)
    )
    click.echo(report(results))
    if json_out:
        save(results, json_out)


@bench.command("flood")
@click.option("--seconds", type=click.FloatRange(min=15), default=30.0, show_default=True,
              help="length of the live valid stream; the flood runs in its middle third")  # fmt: skip
@click.option("--stream-share", type=click.FloatRange(0.05, 1), default=0.5, show_default=True,
              help="the live stream's rate, as a share of ingest's clean drain rate measured first")  # fmt: skip
@click.option("--poison", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="bad messages from one device")  # fmt: skip
@click.option("--rate", type=click.FloatRange(min=10), default=1000.0, show_default=True,
              help="bad messages per second")  # fmt: skip
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="also write the figures as JSON")
@_stack_options
@setting("db_url")
@setting("estate_file")
def bench_flood(
    seconds: float, stream_share: float, poison: int, rate: float, json_out: Path | None, **values: Any
) -> None:
    """A flood of bad messages from one device amid a live stream at a share of ingest's measured rate:
    valid points stored before and during it, every reject counted, nothing unacknowledged, no
    poison after a restart, one invalid_payloads alert."""
    from bench.flood_bench import report_flood, run_flood, save_flood

    settings = settings_from(values, Settings)
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    results = asyncio.run(run_flood(settings, poison, rate, seconds, stream_share, say))
    click.echo(report_flood(results))
    if json_out:
        save_flood(results, json_out)


# -- load --------------------------------------------------------------------------------------


@main.group()
def load() -> None:
    """Locust at the full device count against a platform of its own, then a check of every reading."""


def _load_flags(f: Any) -> Any:
    for field in reversed([k for k in LoadSettings.model_fields if k.startswith("load_")]):
        f = setting(field, LoadSettings)(f)
    return f


@load.command("run")
@click.argument("scenarios", nargs=-1, metavar="[SCENARIO]...")
@_load_flags
@setting("estate_file")
def load_run(scenarios: tuple[str, ...], **values: Any) -> None:
    """Run scenarios (normal, peak, storm, stepup; default all, in that order), each on a fresh stack in
    its own folder under the results folder: Locust's HTML and CSV reports, CPU and memory, the
    verifier's verdict, plots. Exits 1 when an acknowledged reading is missing or duplicated."""
    from load.run import LoadError, run_scenarios
    from load.scenarios import ALL

    settings = settings_from(values, LoadSettings)
    try:
        outcomes = run_scenarios(settings, list(scenarios or ALL), lambda line: click.echo(line, err=True))
    except (LoadError, StackError, EstateError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail(f"stopped; Locust, the services and the stack are down; run folders in {settings.load_results_dir}")
    click.echo("\n".join(f"{o.scenario:8} {'PASS' if o.ok else 'FAIL'}  {o.folder}" for o in outcomes))
    if not all(o.ok for o in outcomes):
        sys.exit(1)


@load.command("verify")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True))
@setting("influx_url")
@setting("influx_database")
def load_verify(folder: Path, **values: Any) -> None:
    """Check a run folder's ledgers against an InfluxDB (the run's own is gone once it ends: point
    --influx-url at one that holds the data). Exits 1 on a missing or duplicated reading."""
    from load.verify import verify_sync

    settings = settings_from(values, Settings)
    try:
        verdict = verify_sync(folder, settings.influx_url, settings.influx_database, lambda s: click.echo(s, err=True))
    except (FileNotFoundError, ValueError, InfluxError) as exc:
        _fail(str(exc))
    click.echo(json.dumps(verdict.to_json(), indent=1))
    if not verdict.ok:
        sys.exit(1)


@load.command("report")
@click.argument("folders", nargs=-1, type=click.Path(path_type=Path, file_okay=False, exists=True))
def load_report(folders: tuple[Path, ...]) -> None:
    """The report of finished runs again (verdict, throughput, latency, storm, steps, CPU and memory)."""
    from load.report import report_folder

    for folder in folders:
        try:
            click.echo(report_folder(folder))
        except (OSError, ValueError, KeyError) as exc:
            _fail(f"{folder}: not a finished load run ({exc})")


@load.command("plot")
@click.argument("folders", nargs=-1, type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None, help="write the PNGs here")
def load_plot(folders: tuple[Path, ...], out: Path | None) -> None:
    """PNG plots (messages per second, publish-to-queryable latency) of run folders."""
    from load.plots import plot_run

    for folder in folders:
        for png in plot_run(folder, out):
            click.echo(str(png))
