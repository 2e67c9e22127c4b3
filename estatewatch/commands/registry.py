"""The registry database and its devices."""

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from devices.estate import EstateError, load_estate
from devices.types import DeviceType
from estatewatch.common import fail
from estatewatch.options import setting, settings_from
from runtime.settings import Settings
from store.registry.db import Registry


@click.group()
def registry() -> None:
    """The registry database: the estate and its devices."""


@registry.command("init")
@setting("estate_file")
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
        fail(str(exc))
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


@click.group()
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
