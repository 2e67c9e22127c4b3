"""API tokens."""

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from estatewatch.common import fail
from estatewatch.options import setting, settings_from
from runtime.settings import Settings
from store.registry.db import Registry
from store.tokens import Role


@click.group()
def tokens() -> None:
    """API tokens: the first admin token, and tokens for people and vendors."""


@tokens.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", required=True, help="who holds it (shows in audit trails)")
@click.option("--grid", "grids", multiple=True, help="a grid_worker's grid (repeat for more)")
@click.option("--vendor", default=None, help="a vendor token's vendor id")
@click.option(
    "--expires", default="90d", show_default=True, help="how long it works (90d, 12h, 2w), or never (admin only)"
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="also write it to this file (mode 600)")
@setting("db_url")
def tokens_create(
    role: str, name: str, grids: tuple[str, ...], vendor: str | None, expires: str, out: Path | None, **values: Any
) -> None:
    """Make a token; it is printed once (only its hash is kept)."""
    from store.tokens import TokenError, TokenStore, parse_expiry

    settings = settings_from(values, Settings)

    async def make() -> str:
        async with Registry(settings.db_url) as reg:
            days = parse_expiry(expires)
            token, _ = await TokenStore(reg).create(Role(role), name, grids=list(grids), vendor=vendor,
                                                    expires_days=days)  # fmt: skip
            return token

    try:
        token = asyncio.run(make())
    except TokenError as exc:
        fail(str(exc))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch(mode=0o600)
        out.chmod(0o600)
        out.write_text(token + "\n")
    click.echo(token)


def _when(ms: int | None, none: str) -> str:
    import datetime as dt

    if ms is None:
        return none
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@setting("db_url")
def tokens_list(as_json: bool, **values: Any) -> None:
    """Tokens, without their secrets: role, state, expiry and last use."""
    import time

    from store.tokens import TokenStore

    settings = settings_from(values, Settings)

    async def read() -> list[Any]:
        async with Registry(settings.db_url) as reg:
            return await TokenStore(reg).list()

    now = int(time.time() * 1000)
    for info in asyncio.run(read()):
        p = info.principal
        expired = info.expires_ms is not None and info.expires_ms <= now
        state = "revoked" if info.revoked_ms else "expired" if expired else "active"
        limits = ",".join(sorted(p.grids)) or p.vendor or ""
        if as_json:
            click.echo(json.dumps({"id": p.token_id, "role": p.role.value, "name": p.name, "state": state,
                                   "grids": sorted(p.grids), "vendor": p.vendor, "created_ms": info.created_ms,
                                   "expires_ms": info.expires_ms, "last_used_ms": info.last_used_ms},
                                  ensure_ascii=False))  # fmt: skip
            continue
        click.echo(
            f"{p.token_id}  {p.role.value:<11} {state:<8} expires {_when(info.expires_ms, 'never'):<20} "
            f"last used {_when(info.last_used_ms, 'never'):<20} {p.name}  {limits}"
        )


@tokens.command("revoke")
@click.argument("token_id")
@setting("db_url")
def tokens_revoke(token_id: str, **values: Any) -> None:
    """Revoke a token by its id (the part after ew_); API processes stop trusting it within their cache time."""
    from store.tokens import TokenStore

    settings = settings_from(values, Settings)

    async def revoke() -> bool:
        async with Registry(settings.db_url) as reg:
            return await TokenStore(reg).revoke(token_id)

    if not asyncio.run(revoke()):
        fail(f"no active token {token_id!r}")
    click.echo(f"revoked {token_id}")
