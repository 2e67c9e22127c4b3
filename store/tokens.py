"""API tokens: ``ew_<id>_<secret>``; the registry keeps the id in clear (lookup, logs) and the
secret's SHA-256 only. The secret has 256 bits of randomness, so a fast hash is the right one (a slow
password hash would only slow every request)."""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select, update

from store.registry.db import Registry
from store.registry.schema import TokenRow

PREFIX = "ew"
DEFAULT_EXPIRY_DAYS = 90
DAY_MS = 86_400_000


class Role(StrEnum):
    ADMIN = "admin"
    ENGINEER = "engineer"
    VENDOR = "vendor"
    GRID_WORKER = "grid_worker"


class TokenError(ValueError):
    pass


class TokenExpiredError(Exception):
    """A token that was valid and is past its expiry."""

    def __init__(self, token_id: str, expires_ms: int) -> None:
        super().__init__(f"token {token_id} expired at {expires_ms} ms")
        self.token_id = token_id
        self.expires_ms = expires_ms


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's id, name and what it may see."""

    token_id: str
    name: str
    role: Role
    grids: frozenset[str] = frozenset()
    vendor: str | None = None

    expires_ms: int | None = None

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        return f"{self.role.value}:{self.name}"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    principal: Principal
    created_ms: int
    revoked_ms: int | None
    expires_ms: int | None
    last_used_ms: int | None


def parse_expiry(text: str) -> int | None:
    """'90d', '12h', '2w' to days (rounded up, at least 1); 'never' to None."""
    from store.retention import duration_ms

    if text.strip().lower() == "never":
        return None
    ms = duration_ms(text.strip())
    if ms <= 0:
        raise TokenError(f"expiry {text!r}: say how long, e.g. 90d, 12h, 2w, or never")
    return -(-ms // DAY_MS)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def create(
        self,
        role: Role,
        name: str,
        *,
        grids: list[str] | None = None,
        vendor: str | None = None,
        expires_days: float | None = DEFAULT_EXPIRY_DAYS,
    ) -> tuple[str, Principal]:
        """A new token (returned once, never stored) and its principal; ``expires_days`` None means
        never, which only an admin token may."""
        if expires_days is None and role is not Role.ADMIN:
            raise TokenError("only admin tokens may never expire")
        if expires_days is not None and expires_days <= 0:
            raise TokenError("a token must be valid for some time")
        if role is Role.GRID_WORKER and not grids:
            raise TokenError("a grid_worker token needs at least one grid")
        if role is Role.VENDOR and not vendor:
            raise TokenError("a vendor token needs its vendor name")
        if role not in (Role.GRID_WORKER,) and grids:
            raise TokenError("only grid_worker tokens are limited to grids")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = int(time.time() * 1000)
        expires = None if expires_days is None else now + int(expires_days * DAY_MS)
        async with self.registry.transaction() as s:
            s.add(
                TokenRow(
                    id=token_id,
                    name=name,
                    role=role.value,
                    grids=sorted(grids or []),
                    vendor=vendor,
                    secret_sha256=_digest(secret),
                    created_ms=now,
                    expires_ms=expires,
                )
            )
        principal = Principal(token_id, name, role, frozenset(grids or []), vendor, expires)
        return f"{PREFIX}_{token_id}_{secret}", principal

    async def verify(self, token: str, now_ms: int | None = None) -> Principal | None:
        """The token's principal; None when unknown, revoked or wrong; TokenExpiredError past its expiry."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        async with self.registry.session() as s:
            row = await s.get(TokenRow, parts[1])
        if row is None or row.revoked_ms is not None:
            return None
        if not hmac.compare_digest(row.secret_sha256, _digest(parts[2])):
            return None
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if row.expires_ms is not None and now >= row.expires_ms:
            raise TokenExpiredError(row.id, row.expires_ms)
        return Principal(row.id, row.name, Role(row.role), frozenset(row.grids), row.vendor, row.expires_ms)

    async def touch(self, token_id: str, at_ms: int) -> None:
        """Record a use (callers throttle this: it is a write)."""
        async with self.registry.transaction() as s:
            await s.execute(update(TokenRow).where(TokenRow.id == token_id).values(last_used_ms=at_ms))

    async def revoke(self, token_id: str) -> bool:
        async with self.registry.transaction() as s:
            row = await s.get(TokenRow, token_id)
            if row is None or row.revoked_ms is not None:
                return False
            row.revoked_ms = int(time.time() * 1000)
            return True

    async def info(self, token_id: str) -> TokenInfo | None:
        return next((i for i in await self.list(token_id) if i.principal.token_id == token_id), None)

    async def list(self, token_id: str | None = None) -> list[TokenInfo]:
        query = select(TokenRow).order_by(TokenRow.created_ms)
        if token_id is not None:
            query = query.where(TokenRow.id == token_id)
        async with self.registry.session() as s:
            rows = (await s.scalars(query)).all()
        return [
            TokenInfo(
                Principal(r.id, r.name, Role(r.role), frozenset(r.grids), r.vendor, r.expires_ms),
                r.created_ms,
                r.revoked_ms,
                r.expires_ms,
                r.last_used_ms,
            )
            for r in rows
        ]
