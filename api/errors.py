"""One JSON shape for every error: ``{"error": {"code", "message", "detail"}}``."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.mqtt import BrokerError
from store.influx import InfluxError

log = logging.getLogger("estatewatch.api")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 422: "invalid", 429: "too_many", 503: "unavailable"}  # fmt: skip


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.detail = detail


def body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        out["detail"] = detail
    return {"error": out}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(body(exc.code, exc.message, exc.detail), exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(body(_CODES.get(exc.status_code, "error"), str(exc.detail)), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"where": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors()
        ]
        return JSONResponse(body("invalid", "the request is not valid", errors), 422)

    @app.exception_handler(BrokerError)
    async def broker_away(request: Request, exc: BrokerError) -> JSONResponse:
        return JSONResponse(body("broker_unavailable", str(exc)), 503, headers={"Retry-After": "5"})

    @app.exception_handler(InfluxError)
    async def influx_away(request: Request, exc: InfluxError) -> JSONResponse:
        log.warning("InfluxDB query failed: %s", exc)
        return JSONResponse(body("influxdb_unavailable", "InfluxDB did not answer the query"), 503,
                            headers={"Retry-After": "5"})  # fmt: skip
