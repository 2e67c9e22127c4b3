"""Request dependencies: the lifespan's state and the calling principal."""

from typing import Annotated

from fastapi import Depends, Header, Request

from api.state import ApiState
from store.tokens import Principal


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(get_state)]


async def get_principal(
    state: State, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Principal:
    return await state.auth.principal(authorization)


Caller = Annotated[Principal, Depends(get_principal)]
