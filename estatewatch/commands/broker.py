"""The broker's dynamic-security file."""

import os
from pathlib import Path

import click

from estatewatch.common import fail


@click.group()
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
        fail(f"set {', '.join(missing)}")
    platform_dynsec(passwords).write(out)
    click.echo(f"wrote {out} with users {', '.join(PLATFORM_USERS)}")
