"""Request dependencies: the lifespan's state, the calling principal, and the roles a route admits."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import require
from api.state import ApiState
from store.tokens import Principal, Role


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


def _caller_with(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    async def allowed(caller: Caller) -> Principal:
        require(caller, *roles)
        return caller

    return allowed


# Who may call a route, said in its signature (403 before the body is even read).
AdminCaller = Annotated[Principal, Depends(_caller_with(Role.ADMIN))]
StaffCaller = Annotated[Principal, Depends(_caller_with(Role.ADMIN, Role.ENGINEER))]
DeviceOwnerCaller = Annotated[Principal, Depends(_caller_with(Role.ADMIN, Role.VENDOR))]
AlertsCaller = Annotated[Principal, Depends(_caller_with(Role.ADMIN, Role.ENGINEER, Role.GRID_WORKER))]
TelemetryCaller = Annotated[
    Principal, Depends(_caller_with(Role.ADMIN, Role.ENGINEER, Role.VENDOR, Role.GRID_WORKER))
]
