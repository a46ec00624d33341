"""Where ContainAI keeps its files, and settings resolved with their source.

Precedence is flag > environment > recorded state > default; every resolved value says where it came
from, so `containai doctor` and error messages can tell the user which knob to turn.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import platformdirs

from containai.errors import ConfigError, UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Resolved(Generic[T]):
    value: T
    source: str


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    state_dir: Path
    log_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Paths:
        """XDG locations, or all under CONTAINAI_HOME when it is set (tests, portable installs)."""
        if home := environ.get("CONTAINAI_HOME"):
            root = Path(home)
            return cls(root / "config", root / "state", root / "logs")
        return cls(
            Path(platformdirs.user_config_dir("containai")),
            Path(platformdirs.user_state_dir("containai")),
            Path(platformdirs.user_log_dir("containai")),
        )

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def secrets_file(self) -> Path:
        """ContainAI's own secret store (``containai secrets set``): an env file, mode 0600."""
        return self.config_dir / "secrets.env"

    @property
    def approvals_file(self) -> Path:
        return self.config_dir / "approvals.toml"

    @property
    def agents_dir(self) -> Path:
        """User agent definitions (``<name>.toml``)."""
        return self.config_dir / "agents"

    @property
    def sessions_dir(self) -> Path:
        """Per-session state on the host (overlay layers, exported bundles kept for recovery)."""
        return self.state_dir / "sessions"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "containai.log"

    @property
    def recorded_ca(self) -> Path:
        """The extra CA that images were last built to trust; sessions trust the same one."""
        return self.state_dir / "extra-ca.crt"


PEM_MARKER = b"-----BEGIN CERTIFICATE-----"


def read_ca_bundle(path: Path, source: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"cannot read the CA bundle {path} ({source}): {exc.strerror}",
            hint="pass a readable PEM file, e.g. --ca-cert /etc/ssl/certs/ca-certificates.crt",
        ) from exc
    if PEM_MARKER not in data:
        raise UsageError(
            f"{path} ({source}) holds no PEM certificate",
            hint="pass a PEM bundle (the text between -----BEGIN CERTIFICATE----- lines)",
        )
    return data


def resolve_ca_cert(flag: Path | None, environ: Mapping[str, str], paths: Paths) -> Resolved[bytes | None]:
    """The extra CA for builds: --ca-cert, then CONTAINAI_EXTRA_CA_CERT, then the recorded one."""
    if flag is not None:
        return Resolved(read_ca_bundle(flag, "--ca-cert"), f"flag --ca-cert {flag}")
    if env_path := environ.get("CONTAINAI_EXTRA_CA_CERT"):
        return Resolved(
            read_ca_bundle(Path(env_path), "CONTAINAI_EXTRA_CA_CERT"),
            f"environment CONTAINAI_EXTRA_CA_CERT={env_path}",
        )
    if paths.recorded_ca.is_file():
        return Resolved(read_ca_bundle(paths.recorded_ca, "recorded"), f"recorded at {paths.recorded_ca}")
    return Resolved(None, "none")


def record_ca(data: bytes | None, paths: Paths) -> None:
    """Remember the CA the images trust; it is public material, but written 0644 only by its owner."""
    if data is None:
        return
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    target = paths.recorded_ca
    if target.is_file() and target.read_bytes() == data:
        return
    partial = target.with_suffix(".tmp")
    partial.write_bytes(data)
    partial.replace(target)


def load_user_config(paths: Paths) -> dict[str, Any]:
    """The user's config.toml as a table; an empty one when the file does not exist."""
    try:
        text = paths.config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(
            f"cannot read {paths.config_file}: {exc.strerror}", hint="check its permissions"
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{paths.config_file} is not valid TOML: {exc}", hint="fix the file") from exc
