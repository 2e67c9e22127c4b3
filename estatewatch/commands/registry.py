"""The registry database and its devices."""

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from sqlalchemy import Connection

from devices.estate import EstateError, load_estate
from devices.types import DeviceType
from estatewatch.common import fail
from estatewatch.options import setting, settings_from
from runtime.settings import Settings
from store.registry.db import Registry

T = TypeVar("T")


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
@click.option("--upgrade", is_flag=True, help="upgrade the registry's schema first (what compose and stack up do)")
@setting("db_url")
def registry_init(estate_file: Path | None, device_credentials: Path | None, upgrade: bool, **values: Any) -> None:
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

    if upgrade:
        _upgrade(settings.db_url, "head")

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


def _on_registry(db_url: str, work: Callable[[Connection], T]) -> T:
    """``work`` on the registry in one transaction; an unreachable database is a clear failure."""
    from sqlalchemy.exc import DBAPIError

    from store.registry import migrate

    try:
        return cast(T, asyncio.run(migrate.run(db_url, work)))
    except (OSError, DBAPIError) as exc:
        fail(f"cannot reach the registry at {migrate.safe_url(db_url)}: {exc}")


def _upgrade(db_url: str, target: str) -> None:
    from store.registry import migrate

    def work(conn: Connection) -> tuple[str | None, str]:
        return migrate.upgrade_sync(conn, target, lambda line: click.echo(f"  {line}"))

    before, after = _on_registry(db_url, work)
    where = migrate.safe_url(db_url)
    if before == after:
        click.echo(f"registry {where}: schema {after}, up to date")
    else:
        click.echo(f"registry {where}: schema {before or 'empty'} -> {after}")


@registry.command("upgrade")
@click.option("--to", "target", default="head", show_default=True, help="a revision id, or head")
@setting("db_url")
def registry_upgrade(target: str, **values: Any) -> None:
    """Upgrade the registry's schema (in one transaction on PostgreSQL). Back it up first
    (estatewatch registry backup); services refuse a registry older than their release."""
    settings = settings_from(values, Settings)
    _upgrade(settings.db_url, target)


@registry.command("downgrade")
@click.option("--to", "target", required=True, help="a revision id, -1 for the one below, or base")
@setting("db_url")
def registry_downgrade(target: str, **values: Any) -> None:
    """Downgrade the registry's schema, where a migration says it loses nothing (others refuse)."""
    from store.registry import migrate

    settings = settings_from(values, Settings)

    def work(conn: Connection) -> tuple[str | None, str]:
        return migrate.downgrade_sync(conn, target, lambda line: click.echo(f"  {line}"))

    try:
        before, after = _on_registry(settings.db_url, work)
    except migrate.IrreversibleError as exc:
        fail(f"refused, nothing changed: {exc}")
    click.echo(f"registry {migrate.safe_url(settings.db_url)}: schema {before} -> {after}")


@registry.command("status")
@setting("db_url")
def registry_status(**values: Any) -> None:
    """The registry's schema revision, and the revisions this release knows."""
    from store.registry import migrate

    settings = settings_from(values, Settings)
    found = _on_registry(settings.db_url, migrate.revision_of)
    newest = migrate.head()
    click.echo(f"registry {migrate.safe_url(settings.db_url)}: schema {found or 'empty'}")
    for step in migrate.chain():
        click.echo(f"  {step.revision}  {step.doc}" + ("  <- the registry" if step.revision == found else ""))
    if found == newest:
        click.echo("up to date")
    elif found is None:
        click.echo("empty: services create it at the newest schema")
    else:
        click.echo("needs: estatewatch registry upgrade")


@registry.command("revision")
@click.option("-m", "--message", required=True, help="what the change is, in a few words")
def registry_revision(message: str) -> None:
    """For developers: write a migration for the models' changes (Alembic autogenerate, compared with
    a scratch database at the newest revision). Read and edit it before committing."""
    import tempfile

    from alembic import command

    from store.registry import migrate

    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{scratch}/scratch.db"

        def work(conn: Connection) -> None:
            command.upgrade(migrate.config(conn), "head")
            if not migrate.model_changes(conn):
                fail("the models match the newest migration: nothing to write")
            number = f"{int(migrate.head()) + 1:04d}"
            command.revision(migrate.config(conn), message, autogenerate=True, rev_id=number)

        asyncio.run(migrate.run(url, work))


@registry.command("backup")
@click.argument("dest", type=click.Path(path_type=Path, dir_okay=False))
@setting("db_url")
def registry_backup(dest: Path, **values: Any) -> None:
    """A consistent copy of the registry while services run: SQLite's backup API, or pg_dump's
    custom format for PostgreSQL."""
    from store.registry.backup import BackupError, backup

    settings = settings_from(values, Settings)
    try:
        report = backup(settings.db_url, dest)
    except BackupError as exc:
        fail(str(exc))
    click.echo(f"registry backed up to {report.path} ({report.bytes:,} bytes)")


@registry.command("restore")
@click.argument("src", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--replace", is_flag=True, help="overwrite a registry that has data")
@setting("db_url")
def registry_restore(src: Path, replace: bool, **values: Any) -> None:
    """Restore a backup (stop the services first). Refuses to overwrite a registry with data unless
    --replace; a restored older schema is then upgraded with: estatewatch registry upgrade."""
    from store.registry import migrate
    from store.registry.backup import BackupError, check_kind, restore

    settings = settings_from(values, Settings)
    where = migrate.safe_url(settings.db_url)
    try:
        check_kind(settings.db_url, src)
    except BackupError as exc:
        fail(str(exc))
    sqlite_file = settings.db_url.startswith("sqlite") and not Path(settings.db_url.split("///", 1)[-1]).exists()
    found = None if sqlite_file else _on_registry(settings.db_url, migrate.revision_of)
    if found is not None and not replace:
        fail(f"the registry at {where} has data (schema {found}): pass --replace to overwrite it")
    try:
        restore(settings.db_url, src, has_data=found is not None)
    except BackupError as exc:
        fail(str(exc))
    now = _on_registry(settings.db_url, migrate.revision_of)
    click.echo(f"registry {where} restored from {src}: schema {now}")
    if now != migrate.head():
        click.echo("its schema is older than this release's: run estatewatch registry upgrade")


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
