"""CLI flags that mirror settings: ``--mqtt-url`` for ``ESTATEWATCH_MQTT_URL`` and so on."""

from collections.abc import Callable
from typing import Any, TypeVar

import click

from store.settings import ENV_PREFIX, Settings, SettingsError, flag_for, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def setting(field: str) -> Callable[[F], F]:
    info = Settings.model_fields[field]
    return click.option(
        flag_for(field),
        field,
        default=None,
        metavar="VALUE",
        help=f"{info.description} [env {ENV_PREFIX}{field.upper()}; default {info.default}]",
    )


def settings_from(values: dict[str, Any]) -> Settings:
    fields = {k: values.pop(k) for k in list(values) if k in Settings.model_fields}
    try:
        return load_settings(**fields)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
