"""CLI flags that mirror settings: ``--mqtt-url`` for ``ESTATEWATCH_MQTT_URL`` and so on."""

import typing
from collections.abc import Callable
from typing import Any, TypeVar

import click

from runtime.settings import ENV_PREFIX, Settings, SettingsError, flag_for, load_settings

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=Settings)


def setting(field: str, model: type[Settings] = Settings) -> Callable[[F], F]:
    info = model.model_fields[field]
    default = "computed" if info.default_factory is not None else info.default
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    aliases = [str(f) for f in extra.get("flags", []) or []]  # type: ignore[union-attr]
    repeated = typing.get_origin(info.annotation) is list
    return click.option(
        flag_for(field),
        *aliases,
        field,
        default=None,
        multiple=repeated,
        metavar="VALUE",
        help=f"{info.description} [env {ENV_PREFIX}{field.upper()}; default {'none' if repeated else default}]",
    )


def all_settings(model: type[Settings]) -> Callable[[F], F]:
    """A flag for every field of ``model``."""

    def apply(f: F) -> F:
        for field in reversed(list(model.model_fields)):
            f = setting(field, model)(f)
        return f

    return apply


def settings_from(values: dict[str, Any], model: type[S]) -> S:
    """The settings in ``values`` (flags; None = not given) over the environment; removes them from ``values``."""
    fields = {k: values.pop(k) for k in list(values) if k in model.model_fields}
    fields = {k: v for k, v in fields.items() if v != ()}  # a repeatable flag not given
    try:
        return load_settings(model, **fields)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
