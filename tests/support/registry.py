"""The registry in tests: its rows as data, real contents written by the platform's own code, and
the registry commands as a user runs them."""

import threading
import traceback
from dataclasses import dataclass
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import Connection, MetaData, select
from sqlalchemy.ext.asyncio import create_async_engine

from devices.alerts import Alert, Severity
from devices.estate import Estate
from estatewatch.cli import main
from store.alerts import AlertStore
from store.checkpoints import Checkpoints
from store.devices import DeviceAdmin
from store.estate_settings import EstateSettings
from store.registry.db import Registry
from store.tokens import Role, TokenStore


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, url: str) -> Ran:
    """``estatewatch ARGS --db-url URL`` as a user runs it, in this process (a fresh interpreter per
    call cost a second each) but on a thread of its own: the commands run their own event loop. An
    exception the command let through shows in ``stderr`` as the traceback a user would see."""
    box: list[Result] = []
    worker = threading.Thread(target=lambda: box.append(CliRunner().invoke(main, [*args, "--db-url", url])))
    worker.start()
    worker.join(120)
    [result] = box
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception))
    return Ran(result.exit_code, result.stdout, stderr)


async def on(url: str, work: Any) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def dump(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table but Alembic's, as the database has it, in key order."""
    meta = MetaData()
    meta.reflect(conn)
    out = {}
    for name, table in meta.tables.items():
        if name == "alembic_version":
            continue
        key = list(table.primary_key.columns) or list(table.columns)
        out[name] = [dict(r._mapping) for r in conn.execute(select(table).order_by(*key))]
    return out


async def real_data(url: str, small: Estate) -> dict[str, Any]:
    """What an estate's registry holds after some weeks, written by the platform's own code."""
    async with Registry(url) as reg:
        await reg.load_estate(small)
        store = AlertStore(reg)
        door = Alert(rule="door_forced", subject="door-b001-u1", site=small.site.id, severity=Severity.WARNING,
                     title="门被强行打开", first_ts=1_000, last_ts=1_000,
                     evidence=[{"ts": 1_000, "door": "forced"}])  # fmt: skip
        opened = await store.apply("opened", 1_000, door)
        await store.apply("repeated", 2_000, door)
        assert opened is not None
        await store.acknowledge(opened.alert.id, "grid:g1:王师傅", "on my way")
        await store.resolve(opened.alert.id, "grid:g1:王师傅", "closed it")
        lane = Alert(rule="fire_lane", subject="fl-01", site=small.site.id, severity=Severity.CRITICAL,
                     title="消防通道被占用", first_ts=5_000, last_ts=5_000)  # fmt: skip
        still_open = await store.apply("opened", 5_000, lane)
        assert still_open is not None
        token, _ = await TokenStore(reg).create(Role.ENGINEER, "property office", expires_days=30)
        await Checkpoints(reg).put(small.site.id, "zombie", {"plates": {"苏C8K123": [1, 2, 3]}})
        await EstateSettings(reg).put(small.site.id, "plate_whitelist", ["苏C8K123"], "engineer:li")
        await DeviceAdmin(reg).record_usernames(small.site.id, {small.devices[0].id: "dev-user-1"})
    return {"token": token, "resolved": opened.alert.id, "open": still_open.alert.id}


