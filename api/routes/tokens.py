"""API tokens, for admins (the first one comes from `estatewatch tokens create` or `make up`)."""

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.deps import AdminCaller, State
from api.errors import ApiError
from api.models import ERRORS, TokenIn, TokenOut
from store.tokens import Role, TokenError, TokenInfo, TokenStore

router = APIRouter(prefix="/tokens", tags=["tokens"], responses=ERRORS)
TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]


def _out(info: TokenInfo, token: str | None = None) -> TokenOut:
    p = info.principal
    return TokenOut(
        id=p.token_id, name=p.name, role=p.role.value, grids=sorted(p.grids), vendor=p.vendor,
        created_ms=info.created_ms, expires_ms=info.expires_ms, last_used_ms=info.last_used_ms, token=token,
    )  # fmt: skip


@router.post("", status_code=201, operation_id="createToken", summary="A new token (shown once)")
async def create_token(body: TokenIn, state: State, caller: AdminCaller) -> TokenOut:
    store = TokenStore(state.registry)
    try:
        token, principal = await store.create(
            Role(body.role), body.name, grids=body.grids, vendor=body.vendor, expires_days=body.expires_days
        )
    except TokenError as exc:
        raise ApiError(422, str(exc), code="bad_token_request") from exc
    made = await store.info(principal.token_id)
    assert made is not None
    return _out(made, token)


@router.get("", operation_id="listTokens", summary="Tokens that are not revoked, with their expiry and last use")
async def list_tokens(state: State, caller: AdminCaller) -> list[TokenOut]:
    return [_out(info) for info in await TokenStore(state.registry).list() if info.revoked_ms is None]


@router.delete("/{token_id}", status_code=204, operation_id="revokeToken", summary="Revoke a token")
async def revoke_token(token_id: TokenId, state: State, caller: AdminCaller) -> Response:
    if not await TokenStore(state.registry).revoke(token_id):
        raise ApiError(404, f"no active token {token_id!r}")
    state.auth.forget()
    return Response(status_code=204)
