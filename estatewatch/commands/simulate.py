"""The simulator: every device of an estate, each its own MQTT client."""

import json
from typing import Any

import click

from devices.estate import Estate, EstateError, load_estate
from estatewatch.common import device_passwords, fail
from estatewatch.options import all_settings, settings_from
from runtime.settings import parse_mqtt_url
from sim.behaviours import sample_devices
from sim.incidents import Incident, IncidentError
from sim.settings import SimSettings


def _play_to_file(s: SimSettings, estate: Estate, incidents: tuple[Incident, ...], start_ms: int | None) -> None:
    """The traffic a live run would record, in event time, with no broker: for replay and tests."""
    import time

    from sim.play import play
    from sim.runner import INCIDENT_DELAY_S

    if s.sim_record is None or s.sim_duration_s is None:
        fail("--offline writes --record FILE for --duration seconds (at --speed): give both")
    chosen = sample_devices([d for d in estate.devices if not s.sim_types or d.type in s.sim_types], s.sim_limit)
    span_ms = int(s.sim_duration_s * s.sim_speed * 1000)
    lines = play(
        estate, chosen, seed=s.sim_seed, start_ms=start_ms or int(time.time() * 1000), duration_ms=span_ms,
        incidents=incidents, incident_after_ms=int(INCIDENT_DELAY_S * s.sim_speed * 1000), rate_scale=s.sim_rate_scale,
    )  # fmt: skip
    written = 0
    with s.sim_record.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += 1
    click.echo(json.dumps({"played": {"devices": len(chosen), "messages": written, "estate_ms": span_ms,
                                      "file": str(s.sim_record)}}), err=True)  # fmt: skip


@click.command()
@all_settings(SimSettings)
def simulate(**values: Any) -> None:
    """Play every device of an estate against the broker, each as its own MQTT client."""
    import datetime as dt

    from sim.main import simulate as run
    from sim.runner import SimOptions

    s = settings_from(values, SimSettings)
    try:
        estate = load_estate(s.estate_file)
        parsed = tuple(Incident.parse(i) for i in s.sim_incidents)
    except (EstateError, IncidentError) as exc:
        fail(str(exc))
    start_ms = None
    if s.sim_start:
        try:
            start = dt.datetime.fromisoformat(s.sim_start)
        except ValueError:
            fail(f"--start {s.sim_start!r} is not an ISO time like 2026-12-01T19:00+08:00")
        start_ms = int((start if start.tzinfo else start.replace(tzinfo=estate.site.tz)).timestamp() * 1000)
    if s.sim_offline:
        _play_to_file(s, estate, parsed, start_ms)
        return
    chosen = sample_devices([d for d in estate.devices if not s.sim_types or d.type in s.sim_types], s.sim_limit)
    options = SimOptions(
        mqtt=parse_mqtt_url(s.mqtt_url),
        seed=s.sim_seed,
        rate_scale=s.sim_rate_scale,
        speed=s.sim_speed,
        duration_s=s.sim_duration_s,
        start_ms=start_ms,
        incidents=parsed,
        record=s.sim_record,
        drain_s=s.drain_s,
        device_passwords=device_passwords(s.sim_device_credentials, estate.site.id, chosen),
    )
    who = "each device as itself" if options.device_passwords is not None else f"as {options.mqtt.username}"
    click.echo(
        f"sim: {len(chosen)} devices of {estate.site.id} -> {options.mqtt.host}:{options.mqtt.port} ({who}) "
        f"in {s.sim_processes} process(es); Ctrl-C stops",
        err=True,
    )
    try:
        totals = run(s.estate_file, chosen, options, processes=s.sim_processes, every_s=s.sim_progress_every_s)
    except (ConnectionError, IncidentError, RuntimeError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        totals = {}
    click.echo(json.dumps({"simulated": totals}), err=True)
