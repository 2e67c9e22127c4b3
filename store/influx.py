"""InfluxDB over the v1 HTTP API: line protocol to /write, InfluxQL to /query.

The v1 API is the one that InfluxDB 1.x, 2.x (compatibility API) and 3.x all serve.
"""

import math
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import httpx


class InfluxError(RuntimeError):
    def __init__(
        self, message: str, status: int | None = None, body: str = "", retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, v, strict=True)) for v in self.values]


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _split_auth(url: str) -> tuple[str, httpx.Auth | None]:
    parts = urlsplit(url)
    if not parts.username:
        return url, None
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), httpx.BasicAuth(parts.username, parts.password or "")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class Influx:
    """``async with Influx(url, database) as db``: one pooled HTTP client for the service's lifetime."""

    def __init__(self, url: str, database: str, timeout_s: float = 10.0) -> None:
        self.url, self._auth = _split_auth(url.rstrip("/"))
        self.database = database
        self._timeout = timeout_s
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._http = httpx.AsyncClient(base_url=self.url, auth=self._auth, timeout=self._timeout)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("Influx used outside 'async with'")
        return self._http

    async def ping(self) -> bool:
        try:
            response = await self.http.get("/ping")
        except httpx.HTTPError:
            return False
        return response.status_code == 204

    async def create_database(self) -> None:
        await self.query(f"CREATE DATABASE {quote_ident(self.database)}", write=True)

    async def write(self, body: bytes, *, gzip: bool = False, precision: str = "ms", rp: str = "") -> None:
        """Write line protocol (into retention policy ``rp``, default: the database's default);
        raises InfluxError with the status and body on anything but 2xx."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        params = {"db": self.database, "precision": precision}
        if rp:
            params["rp"] = rp
        try:
            response = await self.http.post("/write", params=params, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise InfluxError(f"InfluxDB at {self.url} unreachable: {exc!r}") from exc
        if response.status_code // 100 != 2:
            raise InfluxError(
                f"InfluxDB write failed with {response.status_code}: {response.text[:300]}",
                response.status_code,
                response.text,
                _retry_after(response),
            )

    async def query(self, q: str, *, write: bool = False, epoch: str | None = "ms") -> list[list[Series]]:
        """Run InfluxQL; one list of series per statement. Errors of any statement raise InfluxError."""
        params = {"db": self.database, "q": q}
        if epoch:
            params["epoch"] = epoch
        try:
            response = await (
                self.http.post("/query", data=params) if write else self.http.get("/query", params=params)
            )
        except httpx.HTTPError as exc:
            raise InfluxError(f"InfluxDB at {self.url} unreachable: {exc!r}") from exc
        if response.status_code // 100 != 2:
            raise InfluxError(
                f"InfluxDB query failed with {response.status_code}: {response.text[:300]}",
                response.status_code,
                response.text,
            )
        out: list[list[Series]] = []
        for result in response.json().get("results", []):
            if "error" in result:
                raise InfluxError(f"InfluxQL error: {result['error']}", response.status_code, response.text)
            out.append(
                [
                    Series(s.get("name", ""), s.get("tags") or {}, s["columns"], s["values"])
                    for s in result.get("series", [])
                ]
            )
        return out
