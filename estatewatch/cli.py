"""``estatewatch``: one command, a subcommand per job (estatewatch/commands/, a module each)."""

import logging
import os

import click

from estatewatch.commands.bench import bench
from estatewatch.commands.broker import broker
from estatewatch.commands.grafana import grafana
from estatewatch.commands.load import load
from estatewatch.commands.registry import devices, registry
from estatewatch.commands.services import api, health, ingest, rules
from estatewatch.commands.simulate import simulate
from estatewatch.commands.stack import stack
from estatewatch.commands.tokens import tokens


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        # Any command that opens the registry can find it at another schema version: that is an
        # operator's step to take (the message names it), not a crash.
        from store.registry.migrate import RegistrySchemaError

        try:
            return super().invoke(ctx)
        except RegistrySchemaError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """EstateWatch: IoT telemetry for residential estates (MQTT -> InfluxDB, rules, alerts)."""
    logging.basicConfig(
        level=os.environ.get("ESTATEWATCH_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("gmqtt").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the commands print their own progress


for command in (registry, devices, simulate, ingest, health, rules, api, tokens, broker, stack, grafana, bench, load):
    main.add_command(command)
