"""Settings from ``ESTATEWATCH_*`` environment variables, a ``.env`` file, or matching CLI flags."""

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ESTATEWATCH_"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the environment variable and the flag."""


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    def url(self, *, with_password: bool = False) -> str:
        auth = ""
        if self.username:
            auth = self.username + (":" + (self.password or "") if with_password else ":***" if self.password else "")
            auth += "@"
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    tls = parts.scheme == "mqtts"
    return MqttTarget(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


def _mqtt_url(value: str) -> str:
    parse_mqtt_url(value)
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    return value.rstrip("/")


def _db_url(value: str) -> str:
    if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ValueError("must be a sqlite+aiosqlite:/// or postgresql+asyncpg:// URL")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True)

    mqtt_url: Annotated[str, AfterValidator(_mqtt_url)] = Field(
        "mqtt://127.0.0.1:11883", description="broker URL with the service's credentials"
    )
    influx_url: Annotated[str, AfterValidator(_http_url)] = Field(
        "http://127.0.0.1:18086", description="InfluxDB v1 HTTP API (user:pass@ in the URL when auth is on)"
    )
    influx_database: str = Field("estate", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="InfluxDB database")
    estate_file: Path = Field(
        Path("estates/luedi-south.yaml"), description="the estate YAML file", json_schema_extra={"flags": ["--estate"]}
    )
    run_dir: Path = Field(Path(".run"), description="local stack: config, data, logs and pid files")
    # After run_dir: the default follows it, so two stacks in two run folders have two registries.
    db_url: Annotated[str, AfterValidator(_db_url)] = Field(
        default_factory=lambda data: f"sqlite+aiosqlite:///{data['run_dir'] / 'registry.db'}",
        description="registry database (SQLAlchemy async URL); default RUN_DIR/registry.db (SQLite)",
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="log level")
    log_format: str = Field("json", pattern=r"^(json|text)$", description="service logs: json lines or text")
    drain_s: float = Field(
        20.0,
        ge=0,
        le=600,
        description="on SIGTERM, how long a service may finish what it took (ingest's batches, the rules' "
        "messages, the API's requests, the simulator's PUBACKs) before it stops anyway",
    )

    @property
    def mqtt(self) -> MqttTarget:
        return parse_mqtt_url(self.mqtt_url)


def flag_for(field: str) -> str:
    return "--" + field.replace("_", "-")


S = TypeVar("S", bound="Settings")


def load_settings(model: type[S], **overrides: Any) -> S:
    """Settings from the environment, with CLI flags (``None`` = not given) taking precedence."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return model(**given)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else "?"
            lines.append(f"{ENV_PREFIX}{field.upper()} ({flag_for(field)}): {err['msg']}")
        raise SettingsError("bad setting: " + "; ".join(lines)) from None
