"""The registry's schema versions (Alembic): which one a database is at, upgrading it, and the check
that every model change comes with its migration.

Services never change a schema that has data: an empty database is created at the newest version
(a first start), anything older stops them with the command to run (`estatewatch registry
upgrade`), so an upgrade is a step an operator takes, once, with a backup at hand.
"""

import asyncio
import contextlib
import fcntl
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url

from store.registry.engine import make_engine
from store.registry.schema import Base

MIGRATIONS = Path(__file__).parent / "migrations"
# A registry made before migrations existed: its tables, no version table.
UNVERSIONED = "unversioned"
# Any number will do as long as it is the same in every EstateWatch process.
_PG_LOCK_KEY = 0x45_57_52_47  # "EWRG"


class RegistrySchemaError(RuntimeError):
    """The database's schema is not the one this release works with."""


class IrreversibleError(RuntimeError):
    """A downgrade that would lose data."""


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def scripts() -> ScriptDirectory:
    """The migrations (read once per process: every registry open asks for the head)."""
    return ScriptDirectory.from_config(config())


def head() -> str:
    found = scripts().get_current_head()
    if found is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return found


def revision_of(conn: Connection) -> str | None:
    """The database's revision; None when it is empty; UNVERSIONED for a registry older than migrations."""
    found = MigrationContext.configure(conn).get_current_revision()
    if found is not None:
        return found
    return UNVERSIONED if inspect(conn).has_table("sites") else None


def model_changes(conn: Connection) -> list[Any]:
    """What the models say that the database does not have (Alembic's autogenerate diff): empty
    when the migrations describe the models exactly."""
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


@contextlib.contextmanager
def _exclusive(conn: Connection) -> Iterator[None]:
    """One migrating process at a time on PostgreSQL: an advisory lock held to the end of the
    transaction. (SQLite's is ``sqlite_lock``, taken around the whole connection.)"""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    yield


@contextlib.asynccontextmanager
async def sqlite_lock(url: str) -> AsyncIterator[None]:
    """Two services starting on an empty SQLite registry at once must not both create it: a lock
    file beside the database, taken in a worker thread so that a wait blocks no event loop."""
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:":
        yield
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    opened = await asyncio.to_thread(Path(f"{database}.migrate-lock").open, "a")
    with opened as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_current(conn: Connection, url: str) -> None:
    """What every service does when it opens the registry (run inside a transaction)."""
    with _exclusive(conn):
        found = revision_of(conn)
        if found is None:
            command.upgrade(config(conn), "head")
            return
    newest = head()
    if found == newest:
        return
    known = {s.revision for s in scripts().walk_revisions()}
    if found == UNVERSIONED:
        raise RegistrySchemaError(
            f"the registry at {safe_url(url)} was made before schema migrations: back it up, then run "
            "'estatewatch registry upgrade'"
        )
    if found not in known:
        raise RegistrySchemaError(
            f"the registry at {safe_url(url)} is at schema {found}, newer than this release knows ({newest}): "
            "run the release that upgraded it"
        )
    raise RegistrySchemaError(
        f"the registry at {safe_url(url)} is at schema {found}, this release needs {newest}: back it up, then run "
        "'estatewatch registry upgrade'"
    )


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


@dataclass(frozen=True, slots=True)
class Step:
    revision: str
    doc: str


def chain() -> list[Step]:
    """Every revision, oldest first (the history is linear: one head, no branches)."""
    return [Step(r.revision, (r.doc or "").strip().splitlines()[0]) for r in reversed(list(scripts().walk_revisions()))]


def resolve(conn: Connection, target: str) -> str | None:
    """'head', 'base' (None), '-N' (N below the database's revision) or a revision id."""
    ids = [s.revision for s in chain()]
    if target == "head":
        return ids[-1]
    if target == "base":
        return None
    if target.startswith("-") and target[1:].isdigit():
        found = revision_of(conn)
        if found not in ids:
            raise RegistrySchemaError(f"the registry is at {found}: no revision {target} below it")
        at = ids.index(found) - int(target[1:])
        if at < -1:
            raise RegistrySchemaError(f"{target} goes below the first revision ({ids[0]})")
        return ids[at] if at >= 0 else None
    if target not in ids:
        raise RegistrySchemaError(f"no revision {target!r}; known: {', '.join(ids)}")
    return target


def _between(start: str | None, end: str | None) -> list[Step]:
    """The revisions after ``start`` up to and including ``end`` (None: before the first)."""
    steps = chain()
    ids = [s.revision for s in steps]
    lo = ids.index(start) + 1 if start in ids else 0
    hi = ids.index(end) + 1 if end is not None else 0
    return steps[lo:hi]


def upgrade_sync(conn: Connection, target: str, progress: Callable[[str], None]) -> tuple[str | None, str]:
    """Upgrade to ``target`` in the caller's transaction; returns (before, after)."""
    with _exclusive(conn):
        before = revision_of(conn)
        if before == UNVERSIONED:
            # The baseline adopts the old tables; only the record of it is missing.
            progress("registry made before migrations: bringing it to the baseline")
        end = resolve(conn, target)
        if end is None:
            raise RegistrySchemaError("an upgrade goes to a revision or head; base is a downgrade")
        start = None if before == UNVERSIONED else before
        steps = _between(start, end)
        if start is not None and not steps and start != end:
            raise RegistrySchemaError(f"the registry is at {start}, past {end}: that is a downgrade")
        for step in steps:
            progress(f"upgrading to {step.revision}: {step.doc}")
        command.upgrade(config(conn), end)
        return before, revision_of(conn) or "empty"


def downgrade_sync(conn: Connection, target: str, progress: Callable[[str], None]) -> tuple[str | None, str]:
    with _exclusive(conn):
        before = revision_of(conn)
        if before in (None, UNVERSIONED):
            raise RegistrySchemaError("the registry has no schema version to downgrade from")
        end = resolve(conn, target)
        steps = list(reversed(_between(end, before)))
        if not steps and end != before:
            raise RegistrySchemaError(f"the registry is at {before}, below {end}: that is an upgrade")
        # Refused before anything runs: SQLite's DDL is not transactional, a refusal halfway would
        # leave the steps above it undone.
        for step in steps:
            reason = getattr(scripts().get_revision(step.revision).module, "IRREVERSIBLE", None)
            if reason:
                raise IrreversibleError(f"{step.revision}: {reason}")
        for step in steps:
            progress(f"downgrading {step.revision}: {step.doc}")
        command.downgrade(config(conn), end or "base")
        return before, revision_of(conn) or "empty"


async def run(url: str, work: Callable[[Connection], Any]) -> Any:
    """``work`` on a connection of its own, in one transaction (PostgreSQL's DDL is transactional:
    a migration that fails leaves the database as it was)."""
    async with sqlite_lock(url):
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(work)
        finally:
            await engine.dispose()

