"""Bearer tokens to principals, with a short cache so a request costs no registry read; and the
rules of who may see what."""

import asyncio
import logging
import time

from sqlalchemy.exc import SQLAlchemyError

from api.errors import ApiError
from store.tokens import Principal, Role, TokenExpiredError, TokenStore

log = logging.getLogger("estatewatch.api.auth")


# A token's last use is written at most this often (a write per request would cost every request).
TOUCH_EVERY_S = 60.0


class Authenticator:
    def __init__(self, tokens: TokenStore, cache_s: float) -> None:
        self.tokens = tokens
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._touched: dict[str, float] = {}
        self._writes: set[asyncio.Task[None]] = set()

    async def principal(self, token: str | None) -> Principal:
        if not token or not token.strip():
            raise ApiError(401, "no token: send 'Authorization: Bearer <token>'", code="no_token")
        token = token.strip()
        now = time.monotonic()
        wall_ms = int(time.time() * 1000)
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now and (hit[1].expires_ms is None or wall_ms < hit[1].expires_ms):
            self._touch(hit[1].token_id, now, wall_ms)
            return hit[1]
        try:
            found = await self.tokens.verify(token, wall_ms)
        except TokenExpiredError as exc:
            self._cache.pop(token, None)
            raise ApiError(401, "the token has expired: ask an admin for a new one", code="token_expired") from exc
        if found is None:
            self._cache.pop(token, None)
            raise ApiError(401, "the token is unknown or revoked", code="bad_token")
        if self.cache_s:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now + self.cache_s, found)
        self._touch(found.token_id, now, wall_ms)
        return found

    def _touch(self, token_id: str, now: float, wall_ms: int) -> None:
        """Record the use in the background, at most once a TOUCH_EVERY_S per token."""
        if now - self._touched.get(token_id, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
            return
        self._touched[token_id] = now
        task = asyncio.create_task(self._write_use(token_id, wall_ms), name="token-last-used")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_use(self, token_id: str, wall_ms: int) -> None:
        try:
            await self.tokens.touch(token_id, wall_ms)
        except (SQLAlchemyError, OSError) as exc:  # the request is not failed for it; the next use retries
            log.warning("could not record token %s's last use: %s", token_id, exc)
            self._touched.pop(token_id, None)

    def forget(self) -> None:
        """After a revocation: this process stops trusting cached tokens at once."""
        self._cache.clear()


def require(p: Principal, *roles: Role) -> None:
    if p.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise ApiError(403, f"a {p.role.value} token may not do this (needs {allowed})", code="forbidden")


def check_grid(p: Principal, grid: str | None) -> None:
    """Grid workers see only their grids; others see all."""
    if p.role is Role.GRID_WORKER and grid not in p.grids:
        raise ApiError(403, "this is outside your grids", code="forbidden")
