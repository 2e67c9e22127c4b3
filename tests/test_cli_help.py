"""Every subcommand answers --help."""

import click
import pytest
from click.testing import CliRunner

from estatewatch.cli import main


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            found += commands(cmd, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", commands(main), ids=lambda p: " ".join(p) or "estatewatch")
def test_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_the_foundation_commands_exist() -> None:
    names = {" ".join(p) for p in commands(main)}
    assert {"stack up", "stack down", "stack status", "stack run", "simulate", "devices list", "registry init"} <= names
