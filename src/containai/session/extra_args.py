"""``CONTAINAI_EXTRA_DOCKER_ARGS``: the few engine options a user may add, and nothing that weakens a session.

It is an allowlist, not a denylist: resource settings are accepted, every other option (privileges,
capabilities, namespaces, mounts, devices, security options, networks, environment) is refused by
name, since each of them can undo a protection the session relies on.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from containai.errors import ConfigError

MAX_PIDS = 4096
_ACCEPTED = ("--cpus", "--memory", "-m", "--pids-limit")


@dataclass(frozen=True)
class ExtraArgs:
    cpus: str | None = None
    memory: str | None = None
    pids_limit: int | None = None


def _refuse(option: str, why: str) -> ConfigError:
    return ConfigError(
        f"CONTAINAI_EXTRA_DOCKER_ARGS: {option} {why}",
        hint=f"only {', '.join(_ACCEPTED)} are accepted there; remove {option}",
    )


def parse_extra_args(text: str) -> ExtraArgs:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(
            f"CONTAINAI_EXTRA_DOCKER_ARGS cannot be parsed: {exc}", hint="check its quoting"
        ) from exc
    values: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        name, eq, value = word.partition("=")
        if name not in _ACCEPTED:
            raise _refuse(
                name, "would weaken or bypass the sandbox" if name.startswith("-") else "is not an option"
            )
        if not eq:
            index += 1
            if index >= len(words):
                raise _refuse(name, "needs a value")
            value = words[index]
        values["--memory" if name == "-m" else name] = value
        index += 1
    pids = values.get("--pids-limit")
    pids_limit = None
    if pids is not None:
        if not pids.isdigit() or not 0 < int(pids) <= MAX_PIDS:
            raise _refuse("--pids-limit", f"must be a number from 1 to {MAX_PIDS} (unlimited is refused)")
        pids_limit = int(pids)
    return ExtraArgs(cpus=values.get("--cpus"), memory=values.get("--memory"), pids_limit=pids_limit)
