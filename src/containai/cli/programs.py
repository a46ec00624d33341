"""The programs ContainAI installs, read from the one table in ``programs.toml``.

Standard library only and cheap to import: every launcher reads it before anything else.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from containai.images.catalog import Channel, channel_from_program

# Every alias program is this one entry point: it looks its own name up in the table.
LAUNCHER_ENTRY = "containai.cli.launchers:main"
CHANNEL_SUFFIXES = ("-dev", "", "-nightly")


@dataclass(frozen=True)
class Program:
    name: str
    entry: str  # module:function, as in [project.scripts]
    alias: tuple[str, ...] = ()  # the `containai` words a launcher stands for
    help: str | None = None  # the launcher's own help, when the subcommand's would not fit it

    @property
    def is_launcher(self) -> bool:
        return bool(self.alias)

    def installed_names(self) -> tuple[str, ...]:
        """The names it is installed under: a launcher under each channel's, anything else once."""
        if not self.is_launcher:
            return (self.name,)
        return tuple(f"{self.name}{suffix}" for suffix in CHANNEL_SUFFIXES)


@cache
def programs() -> tuple[Program, ...]:
    text = resources.files("containai.cli").joinpath("programs.toml").read_text(encoding="utf-8")
    table = tomllib.loads(text)
    found = []
    for name, row in table.items():
        alias = tuple(row.get("alias", ()))
        found.append(Program(name, row.get("entry", LAUNCHER_ENTRY if alias else ""), alias, row.get("help")))
    return tuple(found)


def launchers() -> tuple[Program, ...]:
    return tuple(p for p in programs() if p.is_launcher)


def console_scripts() -> dict[str, str]:
    """What pyproject.toml's [project.scripts] must say."""
    return {p.name: p.entry for p in programs()}


def launcher_for(invoked_as: str) -> tuple[Program, Channel]:
    """The launcher a program name belongs to (``run-claude-nightly`` is run-claude), and its channel."""
    for program in launchers():
        if invoked_as in program.installed_names():
            return program, channel_from_program(invoked_as)
    known = ", ".join(p.name for p in launchers())
    raise LookupError(f"{invoked_as} is not a ContainAI launcher (those are {known})")
