"""API tokens: ``ew_<id>_<secret>``; the registry keeps the id in clear (lookup, logs) and the
secret's SHA-256 only. The secret has 256 bits of randomness, so a fast hash is the right one (a slow
password hash would only slow every request)."""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select

from store.registry.db import Registry
from store.registry.schema import TokenRow

PREFIX = "ew"


class Role(StrEnum):
    ADMIN = "admin"
    ENGINEER = "engineer"
    VENDOR = "vendor"
    GRID_WORKER = "grid_worker"


class TokenError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's id, name and what it may see."""

    token_id: str
    name: str
    role: Role
    grids: frozenset[str] = frozenset()
    vendor: str | None = None

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        return f"{self.role.value}:{self.name}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def create(
        self, role: Role, name: str, *, grids: list[str] | None = None, vendor: str | None = None
    ) -> tuple[str, Principal]:
        """A new token (returned once, never stored) and its principal."""
        if role is Role.GRID_WORKER and not grids:
            raise TokenError("a grid_worker token needs at least one grid")
        if role is Role.VENDOR and not vendor:
            raise TokenError("a vendor token needs its vendor name")
        if role not in (Role.GRID_WORKER,) and grids:
            raise TokenError("only grid_worker tokens are limited to grids")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        async with self.registry.session() as s, s.begin():
            s.add(
                TokenRow(
                    id=token_id,
                    name=name,
                    role=role.value,
                    grids=sorted(grids or []),
                    vendor=vendor,
                    secret_sha256=_digest(secret),
                    created_ms=int(time.time() * 1000),
                )
            )
        return f"{PREFIX}_{token_id}_{secret}", Principal(token_id, name, role, frozenset(grids or []), vendor)

    async def verify(self, token: str) -> Principal | None:
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        async with self.registry.session() as s:
            row = await s.get(TokenRow, parts[1])
        if row is None or row.revoked_ms is not None:
            return None
        if not hmac.compare_digest(row.secret_sha256, _digest(parts[2])):
            return None
        return Principal(row.id, row.name, Role(row.role), frozenset(row.grids), row.vendor)

    async def revoke(self, token_id: str) -> bool:
        async with self.registry.session() as s, s.begin():
            row = await s.get(TokenRow, token_id)
            if row is None or row.revoked_ms is not None:
                return False
            row.revoked_ms = int(time.time() * 1000)
            return True

    async def list(self) -> list[tuple[Principal, int, int | None]]:
        async with self.registry.session() as s:
            rows = (await s.scalars(select(TokenRow).order_by(TokenRow.created_ms))).all()
        return [
            (Principal(r.id, r.name, Role(r.role), frozenset(r.grids), r.vendor), r.created_ms, r.revoked_ms)
            for r in rows
        ]
