"""Benchmarks that compare against a baseline measured in the same run."""

import asyncio
from pathlib import Path
from typing import Any

import click

from estatewatch.commands.stack import stack_options
from estatewatch.common import fail
from estatewatch.options import setting, settings_from
from runtime.settings import Settings


@click.group()
def bench() -> None:
    """Benchmarks on the local stack; each prints figures against baselines measured in the same run."""


@bench.command("rules")
@click.option(
    "--hours", type=click.FloatRange(min=1), default=6.0, show_default=True, help="estate hours through the engine"
)
@click.option("--latency-seconds", type=click.FloatRange(min=5), default=60.0, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="also write the figures as JSON")
@stack_options
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


@bench.command("boards")
@click.option("--hours", type=click.IntRange(min=1), default=24, show_default=True, help="estate hours of history")
@click.option("--database", default="bench_boards", show_default=True, help="InfluxDB database (dropped first)")
@click.option(
    "--dashboards",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="dashboard JSON files to time (an older release's, say); default: the boards of this tree",
)
@click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True, help="per query, s")
@click.option("--reuse", is_flag=True, help="time the panels on the history a previous run left in --database")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="also write the figures as JSON")
@stack_options
def bench_boards(
    hours: int, database: str, dashboards: Path | None, timeout: float, reuse: bool, json_out: Path | None,
    **values: Any,
) -> None:  # fmt: skip
    """Every panel of the boards timed at 1 h, 24 h and 7 d over a generated history of the full
    reference estate, against InfluxDB's write rate and a one-point query in the same run."""
    from bench.boards_bench import report, run, save
    from store.influx import InfluxError

    settings = settings_from(values, Settings)
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        results = asyncio.run(run(settings.influx_url, database, hours, dashboards, timeout, reuse, say))
    except (InfluxError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    click.echo(report(results))
    if json_out:
        save(results, json_out)


@bench.command("api")
@click.option("--rate", type=click.FloatRange(min=1), default=200.0, show_default=True, help="requests per second")
@click.option("--seconds", type=click.FloatRange(min=5), default=30.0, show_default=True, help="per measurement")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="also write the figures as JSON")
@stack_options
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
@click.option(
    "--peer",
    type=click.Choice(["node-red"]),
    default=None,
    help="also drain the same backlog with this tool (node-red: Node-RED 4 from npm, cached after the first run)",
)
@click.option("--devices", "devices_n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="smoke sensors the backlog comes from (the registry's first ones)")  # fmt: skip
@click.option("--per-message", type=click.IntRange(2, 1000), default=100, show_default=True,
              help="readings a message in the batched drain")  # fmt: skip
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="also write the figures as JSON")
@stack_options
@setting("db_url")
@setting("estate_file")
def bench_ingest(
    messages: int, latency_seconds: float, workers: int, poison_share: float, peer: str | None, devices_n: int,
    per_message: int, json_out: Path | None, **values: Any,
) -> None:  # fmt: skip
    """Ingest's backlog drain rate, CPU per message, RSS and latency against raw Mosquitto and InfluxDB
    rates, and against Node-RED with --peer node-red."""
    from bench.ingest_bench import report, run, save

    settings = settings_from(values, Settings)
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        results = asyncio.run(
            run(settings, messages, latency_seconds, workers, say, poison_share, peer, devices_n, per_message)
        )
    except RuntimeError as exc:  # a missing registry, Node-RED that will not install or start
        fail(str(exc))
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
@stack_options
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
