"""The Locust load test."""

import json
import sys
from pathlib import Path
from typing import Any

import click

from devices.estate import EstateError
from estatewatch.common import fail
from estatewatch.options import setting, settings_from
from load.settings import LoadSettings
from runtime.settings import Settings
from stack.procs import StackError
from store.influx import InfluxError


@click.group()
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
        fail(str(exc))
    except KeyboardInterrupt:
        fail(f"stopped; Locust, the services and the stack are down; run folders in {settings.load_results_dir}")
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
        fail(str(exc))
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
            fail(f"{folder}: not a finished load run ({exc})")


@load.command("plot")
@click.argument("folders", nargs=-1, type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None, help="write the PNGs here")
def load_plot(folders: tuple[Path, ...], out: Path | None) -> None:
    """PNG plots (messages per second, publish-to-queryable latency) of run folders."""
    from load.plots import plot_run

    for folder in folders:
        for png in plot_run(folder, out):
            click.echo(str(png))
