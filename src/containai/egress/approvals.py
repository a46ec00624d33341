"""Domains a repository asks for, and the ones the user approved on the host.

A repository's ``.containai/config.toml`` may carry ``[network] allow = [...]``. Repository content is
untrusted, so those names take effect only once the user approves them (`containai network approve`),
per repository; approvals live in ``~/.config/containai/approvals.toml``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from containai.egress.policy import parse_domain, parse_network_config
from containai.errors import ConfigError

REPO_CONFIG = Path(".containai") / "config.toml"


def repo_requests(repo: Path) -> tuple[str, ...]:
    """The domains ``repo`` asks for (normalised); none when it has no config."""
    path = repo / REPO_CONFIG
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ()
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{path} cannot be read: {exc}", hint="fix or remove the repository's config"
        ) from exc
    allow, _, _ = parse_network_config(data.get("network", {}), f"{path} [network]")
    return allow


def _load(store: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(store.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{store} cannot be read: {exc}", hint="fix or remove it") from exc


def approved(store: Path, repo: Path) -> tuple[str, ...]:
    entry = _load(store).get("repos", {}).get(str(repo), {})
    domains = entry.get("domains", []) if isinstance(entry, Mapping) else []
    return tuple(parse_domain(d, str(store)) for d in domains if isinstance(d, str))


def render_store(repos: Mapping[str, Iterable[str]]) -> str:
    """TOML for the store; JSON string escapes are valid TOML basic strings."""
    lines = ["# Domains approved per repository (`containai network approve`)."]
    for repo in sorted(repos):
        lines += ["", f"[repos.{json.dumps(repo)}]", f"domains = {json.dumps(sorted(set(repos[repo])))}"]
    return "\n".join(lines) + "\n"


def approve(store: Path, repo: Path, domains: Iterable[str]) -> tuple[str, ...]:
    """Add ``domains`` to the repository's approvals (atomically, 0600 from creation)."""
    data = _load(store).get("repos", {})
    repos = {key: list(value.get("domains", [])) for key, value in data.items() if isinstance(value, Mapping)}
    merged = sorted({*repos.get(str(repo), []), *(parse_domain(d, "approve") for d in domains)})
    repos[str(repo)] = merged
    store.parent.mkdir(parents=True, exist_ok=True)
    partial = store.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_store(repos))
    partial.replace(store)
    return tuple(merged)
