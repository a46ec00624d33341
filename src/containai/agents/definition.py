"""Agents are data: a TOML definition says which image, which commands, and what the agent needs.

Built-in definitions ship in ``containai/agents/builtin``; users add their own (aider, gemini-cli,
opencode, ...) as ``~/.config/containai/agents/<name>.toml``. A user file with a built-in's name
replaces the built-in.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from containai.errors import ConfigError, UsageError
from containai.images.catalog import PARTS, image_tag
from containai.inside.protocol import parse_gateway_rule

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
LOGINS = ("claude",)  # host logins ContainAI can read and refresh (containai.gateway.login)


@dataclass(frozen=True)
class GatewayDef:
    """How the agent's model API credential is supplied from outside its container."""

    secret: str  # the host secret's name
    upstream: str  # where the gateway forwards, always through the egress proxy
    header: str  # the header that carries the credential
    base_url_env: str  # the variable that points the agent's CLI at the gateway
    key_env: str  # the variable that gets a placeholder, so the CLI does not ask for a login
    scheme: str = "plain"  # "plain" (the key as is) or "bearer"
    # The ``METHOD /path`` requests the gateway forwards (containai.inside.protocol's grammar); it
    # refuses everything else, so the key cannot reach the upstream's files, batches or admin API.
    allow: tuple[str, ...] = ()
    # For CLIs that take their endpoint from a file rather than a variable (Codex): written under
    # HOME at session start, with {base_url} replaced by the gateway's address.
    config_path: str | None = None
    config: str | None = None
    # Settings the CLI needs only when it goes through the gateway (Copilot's bring-your-own-key mode).
    set_env: Mapping[str, str] = field(default_factory=dict)
    # Another credential for the same upstream, used when the host has no ``secret``: a subscription
    # token (Claude's `claude setup-token`) with its own header, scheme and placeholder variable.
    subscription: GatewayDef | None = None
    # The CLI's own login on the host that the subscription may also come from, refreshed on the host
    # ("claude": Claude Code's ~/.claude/.credentials.json).
    login: str | None = None

    def choices(self) -> tuple[GatewayDef, ...]:
        """The credentials to look for on the host, in order."""
        return (self,) if self.subscription is None else (self, self.subscription)


@dataclass(frozen=True)
class AgentDef:
    name: str
    description: str
    image: str  # a ContainAI image part (claude, base, ...) or a full image reference
    command: tuple[str, ...]
    prompt_command: tuple[str, ...]
    env: tuple[str, ...] = ()
    config_dir: str | None = None
    mcp_config: str | None = None
    endpoints: tuple[str, ...] = ()
    source: str = "built-in"
    gateway: GatewayDef | None = None
    set_env: Mapping[str, str] = field(default_factory=dict)  # fixed, non-secret settings for the CLI

    def image_ref(self, channel: str) -> str:
        return image_tag(self.image, channel) if self.image in PARTS else self.image

    def prompt_argv(self, prompt: str) -> list[str]:
        """The non-interactive command with the prompt as one argument (never through a shell)."""
        return [prompt if word == "{prompt}" else word for word in self.prompt_command]


def _strings(data: dict[str, Any], key: str, source: str, *, required: bool = False) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{source}: `{key}` is missing", hint=f"add {key} = [...] (a list of strings)")
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(
            f"{source}: `{key}` must be a list of strings", hint=f'e.g. {key} = ["word", "word"]'
        )
    return tuple(value)


def parse_agent(data: dict[str, Any], source: str) -> AgentDef:
    """Validate one agent definition (parsed TOML) into an ``AgentDef``."""
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{source}: `name` must be lower-case letters, digits and dashes", hint='e.g. name = "aider"'
        )
    image = data.get("image")
    if not isinstance(image, str) or not image:
        raise ConfigError(
            f"{source}: `image` is missing", hint='name a ContainAI image (image = "base") or any image'
        )
    command = _strings(data, "command", source, required=True)
    prompt_command = _strings(data, "prompt_command", source, required=True)
    if not command:
        raise ConfigError(f"{source}: `command` is empty", hint='e.g. command = ["aider"]')
    if prompt_command.count("{prompt}") != 1:
        raise ConfigError(
            f"{source}: `prompt_command` must contain the word {{prompt}} exactly once",
            hint='e.g. prompt_command = ["aider", "--message", "{prompt}"]',
        )
    env = _strings(data, "env", source)
    for variable in env:
        if not _ENV_NAME.match(variable):
            raise ConfigError(
                f"{source}: {variable!r} in `env` is not a variable name", hint="use NAMES_LIKE_THIS"
            )
    known = {"name", "description", "image", "command", "prompt_command", "env", "config_dir", "mcp_config"}
    unknown = sorted(set(data) - known - {"endpoints", "gateway", "set_env"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {', '.join(unknown)}", hint="see docs/agents.md for the keys"
        )
    return AgentDef(
        name=name,
        description=str(data.get("description", "")),
        image=image,
        command=command,
        prompt_command=prompt_command,
        env=env,
        config_dir=data.get("config_dir"),
        mcp_config=data.get("mcp_config"),
        endpoints=_strings(data, "endpoints", source),
        source=source,
        gateway=_gateway(data.get("gateway"), source),
        set_env=_set_env(data.get("set_env", {}), source),
    )


def _set_env(data: object, source: str) -> dict[str, str]:
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str) and not set(v) & {"\0", "\n"}
        for k, v in data.items()
    ):
        raise ConfigError(
            f"{source}: [set_env] must map variable names to one-line strings",
            hint='e.g. DISABLE_AUTOUPDATER = "1"',
        )
    return dict(data)


def _gateway(data: object, source: str) -> GatewayDef | None:
    if data is None:
        return None
    keys = ("secret", "upstream", "header", "base_url_env", "key_env")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data[k] for k in keys):
        raise ConfigError(
            f"{source}: [gateway] needs {', '.join(keys)} (strings)", hint="see docs/agents.md for an example"
        )
    scheme = data.get("scheme", "plain")
    unknown = sorted(
        set(data) - {*keys, "scheme", "config_path", "config", "set_env", "subscription", "allow"}
    )
    config_path, config = data.get("config_path"), data.get("config")
    if (config_path is None) != (config is None) or not all(
        v is None or isinstance(v, str) for v in (config_path, config)
    ):
        raise ConfigError(
            f"{source}: [gateway] config_path and config go together", hint="give both, or neither"
        )
    if config_path is not None and (config_path.startswith("/") or ".." in config_path.split("/")):
        raise ConfigError(
            f"{source}: [gateway] config_path must be relative to HOME", hint='e.g. ".codex/config.toml"'
        )
    if unknown or scheme not in ("plain", "bearer"):
        raise ConfigError(
            f"{source}: [gateway] has unknown keys or scheme {scheme!r}", hint='scheme is "plain" or "bearer"'
        )
    for variable in (data["base_url_env"], data["key_env"], data["secret"]):
        if not _ENV_NAME.match(variable):
            raise ConfigError(
                f"{source}: {variable!r} in [gateway] is not a variable name", hint="use NAMES_LIKE_THIS"
            )
    if not data["upstream"].startswith(("https://", "http://")):
        raise ConfigError(
            f"{source}: [gateway] upstream must be an http(s) URL", hint="e.g. https://api.example.com"
        )
    primary = GatewayDef(
        allow=_allow(data.get("allow"), source),
        secret=data["secret"],
        upstream=data["upstream"],
        header=data["header"],
        base_url_env=data["base_url_env"],
        key_env=data["key_env"],
        scheme=scheme,
        config_path=config_path,
        config=config,
        set_env=_set_env(data.get("set_env", {}), f"{source} [gateway]"),
    )
    return _subscription(primary, data.get("subscription"), source)


def _allow(data: object, source: str) -> tuple[str, ...]:
    """The gateway's allow list: required, never empty, each rule of the one grammar."""
    hint = 'e.g. allow = ["POST /v1/messages"]: a method, a space, a path (`*` for one segment)'
    if not isinstance(data, list) or not data or not all(isinstance(rule, str) for rule in data):
        raise ConfigError(f"{source}: [gateway] allow must list the requests it forwards", hint=hint)
    for rule in data:
        try:
            parse_gateway_rule(rule)
        except ValueError as exc:
            raise ConfigError(f"{source}: [gateway] allow: {exc}", hint=hint) from None
    return tuple(data)


def _subscription(primary: GatewayDef, data: object, source: str) -> GatewayDef:
    if data is None:
        return primary
    where = f"{source} [gateway.subscription]"
    if (
        not isinstance(data, dict)
        or set(data) - {"secret", "key_env", "header", "scheme", "login"}
        or data.get("login", "claude") not in LOGINS
        or not all(isinstance(data.get(k), str) and _ENV_NAME.match(data[k]) for k in ("secret", "key_env"))
        or not isinstance(data.get("header", "authorization"), str)
        or data.get("scheme", "bearer") not in ("plain", "bearer")
    ):
        raise ConfigError(
            f"{where} needs secret and key_env (variable names), and may set header and scheme",
            hint='e.g. secret = "CLAUDE_CODE_OAUTH_TOKEN", key_env = "CLAUDE_CODE_OAUTH_TOKEN"',
        )
    alternative = replace(
        primary,
        secret=data["secret"],
        key_env=data["key_env"],
        header=data.get("header", "authorization"),
        scheme=data.get("scheme", "bearer"),
        login=data.get("login"),
    )
    return replace(primary, subscription=alternative)


def _load_file(text: str, source: str) -> AgentDef:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}", hint="fix the file, or remove it") from exc
    return parse_agent(data, source)


def load_agents(user_dir: Path | None) -> dict[str, AgentDef]:
    """Built-in agents, then the user's (which may replace a built-in of the same name)."""
    agents: dict[str, AgentDef] = {}
    for entry in sorted(
        resources.files("containai.agents").joinpath("builtin").iterdir(), key=lambda e: e.name
    ):
        if entry.name.endswith(".toml"):
            agent = _load_file(entry.read_text(encoding="utf-8"), "built-in")
            agents[agent.name] = agent
    if user_dir is not None and user_dir.is_dir():
        for path in sorted(user_dir.glob("*.toml")):
            agent = _load_file(path.read_text(encoding="utf-8"), str(path))
            agents[agent.name] = agent
    return agents


def get_agent(name: str, user_dir: Path | None) -> AgentDef:
    agents = load_agents(user_dir)
    if name not in agents:
        where = f" or add {user_dir}/{name}.toml" if user_dir else ""
        raise UsageError(f"unknown agent {name!r}", hint=f"choose one of {', '.join(sorted(agents))}{where}")
    return agents[name]
