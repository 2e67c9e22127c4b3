"""Alembic's entry point. `estatewatch registry upgrade` (and the registry itself, on an empty
database) hands in an open connection; the alembic CLI gets the URL from ESTATEWATCH_DB_URL."""

import asyncio
import os

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from store.registry.schema import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        # SQLite alters a table by copying it: autogenerate writes batch operations for it.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


handed = context.config.attributes.get("connection")
if handed is not None:
    _run(handed)
elif context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against the database")
else:
    asyncio.run(_run_from_url(context.config.get_main_option("sqlalchemy.url") or os.environ["ESTATEWATCH_DB_URL"]))
