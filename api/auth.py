"""Bearer tokens to principals, with a short cache so a request costs no registry read; and the
rules of who may see what."""

import time

from api.errors import ApiError
from store.tokens import Principal, Role, TokenStore


class Authenticator:
    def __init__(self, tokens: TokenStore, cache_s: float) -> None:
        self.tokens = tokens
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def principal(self, token: str | None) -> Principal:
        if not token or not token.strip():
            raise ApiError(401, "no token: send 'Authorization: Bearer <token>'", code="no_token")
        token = token.strip()
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self.tokens.verify(token)
        if found is None:
            self._cache.pop(token, None)
            raise ApiError(401, "the token is unknown or revoked", code="bad_token")
        if self.cache_s:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now + self.cache_s, found)
        return found


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
