"""Docs kept true by tests: every command has help text and is named in the README."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from keyhive.cli.main import _parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def commands() -> list[tuple[str, argparse.ArgumentParser, str | None]]:
    """(full command, its parser, its help) for every command and subcommand of ``keyhive``."""
    found = []

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    found.append((f"{prefix} {name}", sub, helps.get(name)))
                    walk(sub, f"{prefix} {name}")

    walk(_parser(), "keyhive")
    return found


@pytest.mark.parametrize(("command", "parser", "help_text"), commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_has_help(command: str, parser: argparse.ArgumentParser, help_text: str | None) -> None:
    assert help_text, f"{command} has no help text"
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings[0]} has no help text"


@pytest.mark.parametrize("command", [c for c, _, _ in commands() if c.count(" ") == 1])
def test_every_top_level_command_is_in_the_readme(command: str) -> None:
    assert command in README, f"README.md does not show '{command}'"
