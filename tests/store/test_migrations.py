"""The registry's schema migrations, on SQLite and PostgreSQL: the migrations describe the models
exactly, and a registry made by an earlier release (no migrations, real data) upgrades with every
row kept."""

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Integer, MetaData, text

from devices.alerts import Alert, Severity
from devices.estate import Estate
from store.alerts import AlertStore
from store.checkpoints import Checkpoints
from store.registry import migrate
from store.registry.db import Registry
from store.registry.migrate import RegistrySchemaError
from store.registry.schema import Base
from store.tokens import TokenStore
from tests.support.registry import cli, dump, on, real_data

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries

LEGACY = Path(__file__).parent / "legacy"


def make_legacy(conn: Connection, ddl: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """A registry as an earlier release made it (its own DDL) holding ``rows``."""
    for statement in ddl.split(";\n"):
        body = "\n".join(ln for ln in statement.splitlines() if not ln.startswith("--")).strip()
        if body:
            conn.exec_driver_sql(body)
    meta = MetaData()
    meta.reflect(conn)
    for table in meta.sorted_tables:
        have = set(table.columns.keys())
        if rows.get(table.name):
            conn.execute(table.insert(), [{k: v for k, v in r.items() if k in have} for r in rows[table.name]])
        serial = "id" in have and isinstance(table.c.id.type, Integer)
        if conn.dialect.name == "postgresql" and serial and rows.get(table.name):
            # Rows copied in with their ids leave the sequence behind; a real registry's is past them.
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                              f"(SELECT max(id) FROM {table.name}))"))  # fmt: skip


async def test_the_migrations_describe_the_models_exactly(blank_registry_url: str) -> None:
    async with Registry(blank_registry_url):
        pass  # an empty database is created at the newest revision
    assert await on(blank_registry_url, migrate.revision_of) == migrate.head()
    # A model change without its migration shows here (and `estatewatch registry revision` writes it).
    assert await on(blank_registry_url, migrate.model_changes) == []

    def lose_an_index(conn: Connection) -> list[Any]:
        conn.execute(text("DROP INDEX ix_notifications_due"))
        return migrate.model_changes(conn)

    changes = await on(blank_registry_url, lose_an_index)
    assert [c[0] for c in changes] == ["add_index"], changes  # the check sees a difference when there is one


@pytest.mark.parametrize("release", ["early", "landed"])
async def test_a_registry_of_an_earlier_release_upgrades_with_every_row_kept(
    blank_registry_url: str, registry_backend: str, release: str, tmp_path: Path, small: Estate
) -> None:
    source = f"sqlite+aiosqlite:///{tmp_path}/source.db"
    made = await real_data(source, small)
    rows = await on(source, dump)
    assert rows["alert_events"] and rows["notifications"] and rows["api_tokens"] and rows["rule_state"]
    ddl = (LEGACY / f"registry-{release}-{registry_backend}.sql").read_text()
    await on(blank_registry_url, lambda c: make_legacy(c, ddl, rows))
    before = await on(blank_registry_url, dump)
    assert sum(map(len, before.values())) == sum(map(len, rows.values()))

    with pytest.raises(RegistrySchemaError, match=r"made before schema migrations.*registry upgrade"):
        async with Registry(blank_registry_url):
            pass  # services refuse it: upgrading is the operator's step
    listed = cli("devices", "list", url=blank_registry_url)
    assert listed.returncode == 1 and "registry upgrade" in listed.stderr and "Traceback" not in listed.stderr

    upgraded = cli("registry", "upgrade", url=blank_registry_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"schema unversioned -> {migrate.head()}" in upgraded.stdout
    after = await on(blank_registry_url, dump)
    added = {"alerts": {"severity_at_ms"}, "api_tokens": {"expires_ms", "last_used_ms"}} if release == "early" else {}
    for table, kept in before.items():
        assert [{k: v for k, v in r.items() if k not in added.get(table, ())} for r in after[table]] == kept, table
        assert all(r[c] is None for r in after[table] for c in added.get(table, ())), table
    assert await on(blank_registry_url, migrate.model_changes) == []

    # The platform's own code reads and writes it as before.
    async with Registry(blank_registry_url) as reg:
        assert len(await reg.devices()) == len(small.devices)
        store = AlertStore(reg)
        _, trail = await store.get(made["resolved"])
        assert [e.action for e in trail] == ["opened", "acknowledged", "resolved"]
        assert [a.id for a in await store.open_alerts()] == [made["open"]]
        assert await TokenStore(reg).verify(made["token"]) is not None
        assert await Checkpoints(reg).get(small.site.id, "zombie") == {"plates": {"苏C8K123": [1, 2, 3]}}
        new = Alert(rule="smoke", subject="smoke-1", site=small.site.id, severity=Severity.CRITICAL, title="烟感报警",
                    first_ts=9_000, last_ts=9_000)  # fmt: skip
        applied = await store.apply("opened", 9_000, new)
        assert applied is not None and applied.alert.id > max(r["id"] for r in rows["alerts"])


async def test_downgrade_where_safe_and_refused_where_it_would_lose_data(
    blank_registry_url: str, small: Estate
) -> None:
    await real_data(blank_registry_url, small)
    before = await on(blank_registry_url, dump)
    down = cli("registry", "downgrade", "--to", "-1", url=blank_registry_url)
    assert down.returncode == 0, down.stderr
    assert await on(blank_registry_url, migrate.revision_of) == migrate.chain()[-2].revision
    with pytest.raises(RegistrySchemaError, match="needs"):
        async with Registry(blank_registry_url):
            pass
    refused = cli("registry", "downgrade", "--to", "base", url=blank_registry_url)
    assert refused.returncode == 1 and "refused, nothing changed" in refused.stderr
    assert await on(blank_registry_url, migrate.revision_of) == migrate.chain()[-2].revision
    up = cli("registry", "upgrade", url=blank_registry_url)
    assert up.returncode == 0, up.stderr
    assert await on(blank_registry_url, dump) == before
    status = cli("registry", "status", url=blank_registry_url)
    assert "up to date" in status.stdout


async def test_services_starting_at_once_on_an_empty_registry_create_it_once(blank_registry_url: str) -> None:
    async def open_one() -> None:
        async with Registry(blank_registry_url):
            pass

    await asyncio.gather(*(open_one() for _ in range(4)))

    def versions(conn: Connection) -> int:
        return int(conn.scalar(text("SELECT count(*) FROM alembic_version")) or 0)

    assert await on(blank_registry_url, versions) == 1
    assert await on(blank_registry_url, migrate.model_changes) == []


def test_an_older_release_meeting_a_newer_schema_says_so(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/r.db"
    asyncio.run(on(url, lambda c: Base.metadata.create_all(c)))

    def stamp(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('9999')"))

    asyncio.run(on(url, stamp))
    listed = cli("devices", "list", url=url)
    assert listed.returncode == 1 and "schema 9999, newer than this release knows" in listed.stderr


def test_every_migration_ships_in_the_package() -> None:
    """Alembic reads its folder as files: each must be in the wheel's package data (the image
    installs the wheel, not the source tree)."""
    import fnmatch
    import tomllib

    root = Path(__file__).parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["store"]
    files = [p.relative_to(root / "store").as_posix() for p in migrate.MIGRATIONS.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]  # fmt: skip
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files


def test_a_revision_for_unchanged_models_is_refused() -> None:
    result = subprocess.run([sys.executable, "-m", "estatewatch", "registry", "revision", "-m", "nothing"],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 1 and "nothing to write" in result.stderr
