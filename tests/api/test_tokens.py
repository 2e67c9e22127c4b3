"""Tokens expire (90 days unless said otherwise, never only for admins), record their last use,
and tokens made before expiry existed keep working after the registry gains the columns."""

import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from estatewatch.cli import main
from store.registry.db import Registry
from store.registry.schema import TokenRow
from store.tokens import DAY_MS, Role, TokenError, TokenExpiredError, TokenStore, parse_expiry
from tests.support.api import RunningApi, Tokens
from tests.support.ingest import until

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries


async def _expire(registry_url: str, token: str) -> None:
    async with Registry(registry_url) as reg, reg.session() as s, s.begin():
        await s.execute(update(TokenRow).where(TokenRow.id == token.split("_")[1]).values(expires_ms=1))


async def test_expiry_rules(registry_url: str) -> None:
    async with Registry(registry_url) as reg:
        store = TokenStore(reg)
        before = int(time.time() * 1000)
        token, p = await store.create(Role.ENGINEER, "eng")
        assert p.expires_ms is not None and abs(p.expires_ms - before - 90 * DAY_MS) < 60_000
        _, forever = await store.create(Role.ADMIN, "root", expires_days=None)
        assert forever.expires_ms is None
        for role, kw in ((Role.ENGINEER, {}), (Role.VENDOR, {"vendor": "acme"})):
            try:
                await store.create(role, "x", expires_days=None, **kw)  # type: ignore[arg-type]
            except TokenError as exc:
                assert "only admin tokens" in str(exc)
            else:
                raise AssertionError(f"a {role} token that never expires was made")
        assert await store.verify(token, p.expires_ms - 1) is not None
        try:
            await store.verify(token, p.expires_ms)
        except TokenExpiredError:
            pass
        else:
            raise AssertionError("an expired token verified")
    assert parse_expiry("90d") == 90 and parse_expiry("12h") == 1 and parse_expiry("2w") == 14
    assert parse_expiry("never") is None


async def test_an_expired_token_is_refused_with_its_reason_and_use_is_recorded(
    api: RunningApi, tokens: Tokens, registry_url: str
) -> None:
    async with api.client(tokens.engineer) as c:
        assert (await c.get("/api/v1/sites")).status_code == 200

    async def used() -> bool:
        async with api.client(tokens.admin) as c:
            listed = (await c.get("/api/v1/tokens")).json()
        eng = next(t for t in listed if t["role"] == "engineer")
        return eng["last_used_ms"] is not None and eng["expires_ms"] > time.time() * 1000

    assert await until(used, 10)
    await _expire(registry_url, tokens.engineer)
    async with api.client(tokens.engineer) as c:
        r = await c.get("/api/v1/sites")
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"
    async with api.client(tokens.admin) as c:
        r = await c.post("/api/v1/tokens", json={"role": "vendor", "name": "v", "vendor": "acme", "expires_days": None})
        assert r.status_code == 422 and "only admin" in r.json()["error"]["message"]
        r = await c.post("/api/v1/tokens", json={"role": "engineer", "name": "short", "expires_days": 7})
        assert r.status_code == 201 and r.json()["expires_ms"] - r.json()["created_ms"] == 7 * DAY_MS


def test_the_command_line_sets_and_shows_expiry(registry_url: str) -> None:
    runner = CliRunner()
    env = {"ESTATEWATCH_DB_URL": registry_url}
    create = ["tokens", "create", "--role", "engineer", "--name", "e", "--expires"]
    made = runner.invoke(main, [*create, "30d"], env=env)
    assert made.exit_code == 0, made.output
    never = runner.invoke(main, [*create, "never"], env=env)
    assert never.exit_code == 1 and "only admin tokens may never expire" in never.output
    listed = runner.invoke(main, ["tokens", "list"], env=env).output
    line = next(x for x in listed.splitlines() if x.startswith(made.output.strip().split("_")[1]))
    assert "active" in line and "expires 20" in line and "last used never" in line


async def test_tokens_from_before_expiry_keep_working(tmp_path: Path) -> None:
    """A registry made before the columns existed, with a token in it: the columns are added when it
    is opened, and the token keeps working, without an expiry."""
    import hashlib

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE api_tokens (id VARCHAR(32) PRIMARY KEY, name VARCHAR(120), role VARCHAR(16), grids JSON, "
            "vendor VARCHAR(64), secret_sha256 VARCHAR(64), created_ms BIGINT, revoked_ms BIGINT)"
        )
        digest = hashlib.sha256(b"old-secret").hexdigest()
        db.execute("INSERT INTO api_tokens VALUES ('0123456789ab', 'old', 'engineer', '[]', NULL, ?, 1, NULL)",
                   (digest,))  # fmt: skip
    async with Registry(f"sqlite+aiosqlite:///{path}") as reg:
        found = await TokenStore(reg).verify("ew_0123456789ab_old-secret")
        assert found is not None and found.role is Role.ENGINEER and found.expires_ms is None
        [info] = await TokenStore(reg).list()
        assert info.expires_ms is None and info.last_used_ms is None
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(api_tokens)")}
    assert {"expires_ms", "last_used_ms"} <= columns
