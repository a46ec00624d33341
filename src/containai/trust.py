"""Repository trust: what a repository asks for, and what the user approved for it on the host.

Egress (domains) and MCP (servers) both read a repository's requests and the user's approvals here,
and nowhere else; this module depends on neither of them (the egress policy's domain grammar aside),
so neither depends on the other.

A repository's ``.containai/config.toml`` may carry ``[network] allow = [...]`` and
``[mcp_servers.<name>]`` tables. Repository content is untrusted, so those take effect only once the
user approves them, per repository: domains by name (`containai network approve`), MCP servers by
the digest of their whole definition (`containai mcp approve`), so that any later change to a server
needs approving again. Both live in ``~/.config/containai/approvals.toml``::

    [repos."/home/me/src/project"]
    domains = ["registry.npmjs.org"]

    [repos."/home/me/src/project".mcp]
    "docs" = "sha256:..."

Every write rewrites the whole file (atomically, 0600 from creation) from what it read, so approving
one kind never drops the other.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from containai.config import REPO_SETTINGS, load_repo_config
from containai.egress.policy import parse_domain, parse_network_config
from containai.errors import ConfigError

REPO_CONFIG = REPO_SETTINGS


def repo_requests(repo: Path) -> tuple[str, ...]:
    """The domains ``repo`` asks for (normalised); none when it has no config."""
    data = load_repo_config(repo)
    allow, _, _ = parse_network_config(data.get("network", {}), f"{repo / REPO_CONFIG} [network]")
    return allow


class Pinnable(Protocol):
    """What an MCP approval pins: a server's name and the digest of its whole definition."""

    @property
    def name(self) -> str: ...

    def digest(self) -> str: ...


@dataclass(frozen=True)
class RepoApprovals:
    """One repository's entry in the store."""

    domains: tuple[str, ...] = ()
    mcp: Mapping[str, str] = field(default_factory=dict)  # server name -> "sha256:..." of its definition


def _load(store: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(store.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{store} cannot be read: {exc}", hint="fix or remove it") from exc


def _entry(value: object) -> RepoApprovals:
    # Entries that are not of our making are dropped rather than trusted: a malformed pin matches nothing.
    if not isinstance(value, Mapping):
        return RepoApprovals()
    domains = value.get("domains", [])
    pins = value.get("mcp", {})
    return RepoApprovals(
        domains=tuple(d for d in domains if isinstance(d, str)) if isinstance(domains, list) else (),
        mcp={k: v for k, v in pins.items() if isinstance(v, str)} if isinstance(pins, Mapping) else {},
    )


def load_store(store: Path) -> dict[str, RepoApprovals]:
    """Every repository's approvals, keyed by the repository's path."""
    repos = _load(store).get("repos", {})
    if not isinstance(repos, Mapping):
        return {}
    return {str(key): _entry(value) for key, value in repos.items()}


def approved(store: Path, repo: Path) -> tuple[str, ...]:
    domains = load_store(store).get(str(repo), RepoApprovals()).domains
    return tuple(parse_domain(d, str(store)) for d in domains)


def approved_mcp(store: Path, repo: Path) -> dict[str, str]:
    """The MCP servers pinned for ``repo``: name -> digest of the definition the user approved."""
    return dict(load_store(store).get(str(repo), RepoApprovals()).mcp)


def render_store(repos: Mapping[str, RepoApprovals]) -> str:
    """TOML for the store; JSON string escapes are valid TOML basic strings."""
    lines = ["# Domains and MCP servers approved per repository (`containai network|mcp approve`)."]
    for repo in sorted(repos):
        entry = repos[repo]
        if not entry.domains and not entry.mcp:
            continue
        key = json.dumps(repo)
        lines += ["", f"[repos.{key}]", f"domains = {json.dumps(sorted(set(entry.domains)))}"]
        if entry.mcp:
            lines += ["", f"[repos.{key}.mcp]"]
            lines += [f"{json.dumps(name)} = {json.dumps(entry.mcp[name])}" for name in sorted(entry.mcp)]
    return "\n".join(lines) + "\n"


def _write(store: Path, repos: Mapping[str, RepoApprovals]) -> None:
    store.parent.mkdir(parents=True, exist_ok=True)
    partial = store.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_store(repos))
    partial.replace(store)


def approve(store: Path, repo: Path, domains: Iterable[str]) -> tuple[str, ...]:
    """Add ``domains`` to the repository's approvals (atomically, 0600 from creation)."""
    repos = load_store(store)
    entry = repos.get(str(repo), RepoApprovals())
    merged = tuple(sorted({*entry.domains, *(parse_domain(d, "approve") for d in domains)}))
    repos[str(repo)] = replace(entry, domains=merged)
    _write(store, repos)
    return merged


def approve_mcp(store: Path, repo: Path, servers: Iterable[Pinnable]) -> dict[str, str]:
    """Pin the digest of each server's definition as shown to the user; return the repo's pins."""
    repos = load_store(store)
    entry = repos.get(str(repo), RepoApprovals())
    pins = {**entry.mcp, **{server.name: server.digest() for server in servers}}
    repos[str(repo)] = replace(entry, mcp=pins)
    _write(store, repos)
    return pins


def revoke_mcp(store: Path, repo: Path, names: Iterable[str]) -> tuple[str, ...]:
    """Drop the pins for ``names`` (all of the repo's, when none are named); return those dropped."""
    repos = load_store(store)
    entry = repos.get(str(repo), RepoApprovals())
    wanted = set(names) or set(entry.mcp)
    dropped = tuple(sorted(wanted & set(entry.mcp)))
    if dropped:
        repos[str(repo)] = replace(entry, mcp={k: v for k, v in entry.mcp.items() if k not in wanted})
        _write(store, repos)
    return dropped
