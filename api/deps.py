"""Request dependencies: the lifespan's state and the calling principal."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.state import ApiState
from store.tokens import Principal


async def get_state(request: Request) -> ApiState:  # async: a sync dependency costs a thread hop
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(get_state)]


# Declared in the OpenAPI document; a missing or non-Bearer header comes through as None, so the
# refusal is ours (401 with a reason), not FastAPI's.
bearer = HTTPBearer(auto_error=False, description="an EstateWatch API token: `estatewatch tokens create`")


async def get_principal(
    state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    return await state.auth.principal(credentials.credentials if credentials else None)


Caller = Annotated[Principal, Depends(get_principal)]
