"""The platform's services: ingest, rules and the API, and their health check."""

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from api.settings import ApiSettings
from devices.estate import EstateError, load_estate
from estatewatch.common import fail
from estatewatch.options import all_settings, setting, settings_from
from ingest.settings import IngestSettings
from rules.settings import RulesSettings
from runtime.logs import setup_logging
from runtime.settings import Settings


def _serve(make: Any, extra: dict[str, Any]) -> None:
    """Run a service until SIGTERM or Ctrl-C; exit 1 when one of its tasks failed, so that a
    supervisor can tell a crash from a stop."""
    from runtime.service import serve

    try:
        code = serve(make, extra)
    except ConnectionError as exc:
        fail(str(exc))
    sys.exit(code)


@click.command()
@all_settings(IngestSettings)
def ingest(**values: Any) -> None:
    """MQTT -> InfluxDB: every accepted reading stored once; SIGTERM drains, then exits."""
    from ingest.service import IngestService

    settings = settings_from(values, IngestSettings)
    setup_logging(settings.log_level, settings.log_format)

    extra = {"broker": settings.mqtt.url(), "influx": settings.influx_url, "metrics_port": settings.ingest_metrics_port}
    _serve(lambda: IngestService(settings), extra)


@click.command()
@click.argument("url", default="http://127.0.0.1:9102/healthz")
@click.option("--timeout", type=float, default=5.0, show_default=True)
def health(url: str, timeout: float) -> None:
    """Exit 0 when a service's /healthz answers 200 (for container healthchecks)."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        fail(f"{url}: {exc}")
    click.echo(response.text.strip())
    if response.status_code != 200:
        sys.exit(1)


@click.group()
def rules() -> None:
    """The rules engine."""


@rules.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@setting("estate_file")
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
        fail(str(exc))
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
        fail(str(exc))


@click.command()
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
    server: uvicorn.Server | None = None

    def stop_serving() -> None:
        assert server is not None
        server.should_exit = True  # uvicorn's own graceful stop: requests in flight finish

    app = create_app(settings, on_failure=stop_serving)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            access_log=False,  # the app logs requests itself, without query strings or headers
            timeout_graceful_shutdown=int(settings.drain_s),
            # uvicorn's 5 s default closes a phone's connection between two polls, and a request sent
            # as it closes fails (seen in the load test): idle connections outlive the polling interval.
            timeout_keep_alive=settings.api_keep_alive_s,
        )
    )
    server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: start-up failed (the log says why)
    failed = getattr(app.state, "service", None) and app.state.service.failed
    if failed:
        print(f"stopped because {failed}", file=sys.stderr, flush=True)
        sys.exit(1)
