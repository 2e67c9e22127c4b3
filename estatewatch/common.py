"""What the command modules share: a clear failure, and the devices' own broker credentials."""

import json
from pathlib import Path
from typing import Any, NoReturn

import click


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def device_passwords(path: Path | None, site: str, devices: list[Any]) -> dict[str, str] | None:
    if path is None:
        return None
    from store.dynsec import device_username

    try:
        passwords: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"{path}: cannot read device credentials: {exc}")
    missing = [d.id for d in devices if device_username(site, d.id) not in passwords]
    if missing:
        fail(f"{path} has no password for {len(missing)} device(s), e.g. {missing[0]}: is it this estate's?")
    return passwords
