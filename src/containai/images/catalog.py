"""What ContainAI builds: the image parts, their tags, their pins and the order they build in."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from containai.errors import UsageError

Channel = Literal["dev", "prod", "nightly"]
CHANNELS: tuple[Channel, ...] = ("dev", "prod", "nightly")

AGENTS = ("copilot", "codex", "claude")
# Build order: the base first, since every agent image is built on it. Each sidecar has its own image,
# named for its role: the egress proxy, the model-credential gateway, the log forwarder.
PARTS = ("base", *AGENTS, "proxy", "gateway", "logfwd")


@dataclass(frozen=True)
class Program:
    """A program of ``containai.inside`` that an image runs: ``/usr/local/bin/<command>`` runs ``<module>.main``."""

    command: str
    module: str


# What each image gets of containai.inside (besides its protocol module); the agents inherit base's.
PROGRAMS: dict[str, tuple[Program, ...]] = {
    "base": (Program("containai-entrypoint", "entrypoint"), Program("mcp-stub", "stub")),
    "gateway": (Program("containai-gateway", "gateway"),),
    "logfwd": (Program("containai-logfwd", "logfwd"),),
}

LABEL_PREFIX = "ai.containai"
SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class AgentPin:
    package: str
    version: str
    command: str


@dataclass(frozen=True)
class Pins:
    node_version: str
    node_integrity: dict[str, str]
    npm_version: str
    npm_integrity: str
    agents: dict[str, AgentPin]


def load_pins() -> Pins:
    text = resources.files("containai.images").joinpath("pins.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return Pins(
        node_version=data["node"]["version"],
        node_integrity=dict(data["node"]["integrity"]),
        npm_version=data["npm"]["version"],
        npm_integrity=data["npm"]["integrity"],
        agents={name: AgentPin(**entry) for name, entry in data["agents"].items()},
    )


def image_tag(part: str, channel: str) -> str:
    return f"containai-{part}:{channel}"


def context_name(part: str) -> str:
    """The folder under images/context that holds a part's build files."""
    return "agent" if part in AGENTS else part


def parse_parts(text: str) -> tuple[str, ...]:
    """Turn ``--agents copilot,codex`` or ``all`` into parts, in build order (``base`` is implied)."""
    names = {name.strip().lower() for name in text.split(",") if name.strip()}
    if not names:
        raise UsageError("--agents is empty", hint=f"name one or more of {','.join(PARTS)}, or all")
    if "all" in names:
        return PARTS
    unknown = sorted(names - set(PARTS))
    if unknown:
        raise UsageError(
            f"unknown image part {', '.join(unknown)}",
            hint=f"choose from {','.join(PARTS)}, or all",
        )
    if names & set(AGENTS):
        names.add("base")
    return tuple(part for part in PARTS if part in names)


def parse_channel(text: str) -> Channel:
    lowered = text.strip().lower()
    for channel in CHANNELS:
        if lowered == channel:
            return channel
    raise UsageError(f"unknown channel {text!r}", hint="use dev, prod or nightly")


def channel_from_program(program: str) -> Channel:
    """``run-claude-dev`` is the dev channel, ``run-claude-nightly`` nightly, ``run-claude`` the release."""
    if program.endswith("-dev"):
        return "dev"
    if program.endswith("-nightly"):
        return "nightly"
    return "prod"
