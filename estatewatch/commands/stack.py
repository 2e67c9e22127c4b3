"""The local stack (make up)."""

import sys
from pathlib import Path
from typing import Any

import click

from devices.estate import EstateError
from estatewatch.common import fail
from estatewatch.options import setting, settings_from
from runtime.settings import Settings
from stack.procs import StackError


@click.group()
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


def stack_options(f: Any) -> Any:
    for field in ("run_dir", "influx_database", "influx_url", "mqtt_url"):
        f = setting(field)(f)
    return f


@stack.command("up")
@stack_options
@device_credentials_option
def stack_up(device_credentials: bool, **values: Any) -> None:
    """Start Mosquitto and influxd in the background (no-op for what already runs)."""
    try:
        for line in _stack(values, device_credentials).up():
            click.echo(line)
    except StackError as exc:
        fail(str(exc))


@stack.command("down")
@stack_options
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
@stack_options
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
@stack_options
@setting("db_url")
@setting("estate_file")
@click.option("--simulate/--no-simulate", default=True, show_default=True, help="also run the simulator")
@click.option("--sim-args", default="", help="extra flags for the simulator, e.g. '--rate-scale 3'")
@device_credentials_option
def stack_run(estate_file: Path | None, simulate: bool, sim_args: str, device_credentials: bool, **values: Any) -> None:
    """Everything in the foreground: stack, registry, services and the simulator; Ctrl-C stops all."""
    from stack.supervise import run_everything

    settings = settings_from({"estate_file": estate_file, **values}, Settings)
    try:
        code = run_everything(
            settings, simulate=simulate, sim_args=sim_args.split(), device_credentials=device_credentials
        )
    except (StackError, EstateError) as exc:
        fail(str(exc))
    sys.exit(code)
