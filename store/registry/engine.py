"""The registry's database engine: SQLite (one estate, one machine) or PostgreSQL (production)."""

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool


def _sqlite_dir(url: str) -> None:
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and url[len(prefix) :] not in ("", ":memory:"):
        Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL: readers never wait for the writer, and a commit appends instead of rewriting pages;
    # NORMAL syncs at checkpoints, not every commit (consistent after a crash, the last commits may
    # be lost on power failure). A busy timeout turns writer contention into a short wait.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
    # The driver's own transaction handling begins one only before a write, so an ORM read and the
    # write that follows it ran in different transactions: another process's commit in between was
    # silently overwritten (two rules services resolving one alert, measured). SQLAlchemy emits
    # BEGIN itself instead (``_sqlite_begin``).
    dbapi_connection.isolation_level = None


# An execution option: sessions that write (``Registry.transaction``) take SQLite's write lock at
# BEGIN, so they wait their turn before reading what they will change.
WRITE_OPTION = "estatewatch_write"


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")


def make_engine(url: str, *, pooled: bool = False) -> AsyncEngine:
    """``pooled``: keep one SQLite connection open (a busy service); by default each session opens
    its own, so no aiosqlite thread idles (and polls) between a quiet service's rare reads.
    PostgreSQL always pools."""
    sqlite = url.startswith("sqlite")
    options: dict[str, Any] = {}
    if sqlite:
        _sqlite_dir(url)
        # SQLite has one writer at a time; writers that collide sleep in its busy handler (up to
        # 100 ms a turn, measured as 0.8 s notification stalls). One shared connection makes the
        # service's sessions queue fairly in asyncio instead.
        options = {"pool_size": 1, "max_overflow": 0} if pooled else {"poolclass": NullPool}
    else:
        # A connection PostgreSQL closed (a restart, an idle timeout) is found before use, not by a query.
        options = {"pool_pre_ping": True}
    engine = create_async_engine(url, **options)
    if sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine
