"""Backing up the registry while the platform writes to it, and restoring it: the commands of
docs/registry.md, on SQLite (its backup API) and PostgreSQL (pg_dump / pg_restore)."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from devices.alerts import Alert, Severity
from devices.estate import Estate
from store.alerts import AlertStore
from store.registry.db import Registry
from store.tokens import TokenStore
from tests.support.registry import cli, dump, on, real_data
from tests.support.servers import PostgresServer

pytestmark = pytest.mark.both_registries


@pytest.fixture
def another_registry_url(request: pytest.FixtureRequest, registry_backend: str, tmp_path: Path) -> Callable[[], str]:
    made = iter(range(1, 100))

    def make() -> str:
        if registry_backend == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path}/other-{next(made)}.db"
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.new_database()

    return make


async def storm(url: str, site: str, warm: asyncio.Event, stop: asyncio.Event) -> int:
    """Alerts opening and repeating as fast as the registry takes them (``warm`` after the first
    twenty), until ``stop``."""
    n = 0
    async with Registry(url) as reg:
        store = AlertStore(reg)
        while not stop.is_set():
            alert = Alert(rule="smoke", subject=f"smoke-{n % 50}", site=site, severity=Severity.WARNING,
                          title="烟感报警", first_ts=1_000 + n, last_ts=1_000 + n)  # fmt: skip
            await store.apply("opened" if n < 50 else "repeated", 1_000 + n, alert)
            n += 1
            if n == 20:
                warm.set()
    return n


def dangling(conn: Connection) -> int:
    """Audit events and notifications whose alert is missing: a copy taken halfway through a
    transaction would have some."""
    events = conn.scalar(text("SELECT count(*) FROM alert_events e LEFT JOIN alerts a ON a.id = e.alert_id "
                              "WHERE a.id IS NULL"))  # fmt: skip
    notes = conn.scalar(text("SELECT count(*) FROM notifications n LEFT JOIN alerts a ON a.id = n.alert_id "
                             "WHERE a.id IS NULL"))  # fmt: skip
    return int(events or 0) + int(notes or 0)


async def test_a_backup_taken_while_alerts_pour_in_restores_whole(
    blank_registry_url: str, another_registry_url: Callable[[], str], small: Estate, tmp_path: Path
) -> None:
    made = await real_data(blank_registry_url, small)
    warm, stop = asyncio.Event(), asyncio.Event()
    writer = asyncio.create_task(storm(blank_registry_url, small.site.id, warm, stop))
    try:
        await asyncio.wait_for(warm.wait(), 30)
        backup = str(tmp_path / "online.bak")
        online = await asyncio.to_thread(cli, "registry", "backup", backup, url=blank_registry_url)
    finally:
        stop.set()
        written = await writer
    assert online.returncode == 0, online.stderr
    assert written > 20 and "registry backed up to" in online.stdout

    target = another_registry_url()
    restored = await asyncio.to_thread(cli, "registry", "restore", str(tmp_path / "online.bak"), url=target)
    assert restored.returncode == 0, restored.stderr
    assert await on(target, dangling) == 0
    async with Registry(target) as reg:  # at the current schema: the services open it as it is
        assert len(await reg.devices()) == len(small.devices)
        assert await TokenStore(reg).verify(made["token"]) is not None
        _, trail = await AlertStore(reg).get(made["resolved"])
        assert [e.action for e in trail] == ["opened", "acknowledged", "resolved"]

    # Quiet: the backup is the registry, row for row.
    quiet = tmp_path / "quiet.bak"
    assert (await asyncio.to_thread(cli, "registry", "backup", str(quiet), url=blank_registry_url)).returncode == 0
    expected = await on(blank_registry_url, dump)
    again = another_registry_url()
    assert (await asyncio.to_thread(cli, "registry", "restore", str(quiet), url=again)).returncode == 0
    assert await on(again, dump) == expected

    # A registry with data is only overwritten when asked.
    refused = await asyncio.to_thread(cli, "registry", "restore", str(quiet), url=target)
    assert refused.returncode == 1 and "--replace" in refused.stderr
    replaced = await asyncio.to_thread(cli, "registry", "restore", str(quiet), "--replace", url=target)
    assert replaced.returncode == 0, replaced.stderr
    assert await on(target, dump) == expected


def test_a_backup_of_the_wrong_kind_or_not_a_backup_is_refused_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bak"
    junk.write_bytes(b"not a backup at all")
    result = cli("registry", "restore", str(junk), url=f"sqlite+aiosqlite:///{tmp_path}/r.db")
    assert result.returncode == 1 and "neither a SQLite registry backup nor a pg_dump archive" in result.stderr
    sqlite_backup = tmp_path / "s.bak"
    sqlite_backup.write_bytes(b"SQLite format 3\x00" + bytes(100))
    result = cli("registry", "restore", str(sqlite_backup), url="postgresql+asyncpg://x@127.0.0.1:1/none")
    assert result.returncode == 1 and "is a sqlite backup, the registry is postgresql" in result.stderr
    unreachable = cli("registry", "status", url="postgresql+asyncpg://x:secret@127.0.0.1:1/none")
    assert unreachable.returncode == 1 and "cannot reach the registry at" in unreachable.stderr
    assert "secret" not in unreachable.stderr and "Traceback" not in unreachable.stderr
