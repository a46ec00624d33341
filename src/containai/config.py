"""Where ContainAI keeps its files, and the one settings object, each value with its source.

``resolve_settings`` builds ``Settings`` once, at the CLI boundary, from the command's flags, the
environment, the repository's ``.containai/config.toml``, the user's ``config.toml`` and the defaults
below, in that order of precedence; every value says where it came from, so `containai doctor
--settings` and error messages can tell the user which knob to turn. Nothing past the CLI reads
``CONTAINAI_*`` variables for these: it is handed the settings (or values taken from them).

The defaults live here and nowhere else.
"""

from __future__ import annotations

import errno
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import platformdirs

from containai.errors import ConfigError, ContainAIError, UsageError

if TYPE_CHECKING:
    from containai.egress.sidecar import Lab
    from containai.workspace.gate import GatePolicy

T = TypeVar("T")

# -- the defaults: one set, here ------------------------------------------------------------------
DEFAULT_CHANNEL = "dev"  # `containai` itself; a launcher's channel comes from its name
DEFAULT_MEMORY = "8g"  # swap included
DEFAULT_MEMORY_BYTES = 8 * 2**30  # the same, for specs built without settings (a test checks they agree)
DEFAULT_MAX_CPUS = 4  # a session gets the host's CPUs, up to this many
DEFAULT_PIDS = 1024
# A session's disk on the host: its workspace (an overlay's changes, or a clone's whole checkout), its
# cache and its logs, together; and how many files they may hold (each costs an inode, and walking
# them is what measuring costs). See containai/session/disk.py.
DEFAULT_DISK_LIMIT = "20g"
DEFAULT_DISK_LIMIT_BYTES = 20 * 2**30  # the same, for sessions planned without settings (a test checks)
DEFAULT_DISK_FILES = 1_000_000
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org"
# Bounds on what the agent controls and the host handles (docs/reliability.md).
DEFAULT_EXPORT_TIMEOUT = 600  # seconds: each command of the export (bundle, copy out) in the container
DEFAULT_EXPORT_MAX = 2 * 2**30  # bytes: the bundle copied out of the container
DEFAULT_EGRESS_LOG_MAX = 64 * 2**20  # bytes: the egress audit the proxy keeps, and the host copies
REPO_SETTINGS = Path(".containai") / "config.toml"  # a repository's own file (also its requests)


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


# -- the settings object ---------------------------------------------------------------------------

SETTINGS_TABLE = "settings"  # [settings] in config.toml (the user's, or a repository's)
# What a repository's .containai/config.toml may set: how much of the host a session takes, and no
# more. Whatever else it holds only asks (domains, MCP servers) and waits for the user's approval.
# Not the disk cap: it bounds what the repository's own agent fills on the user's disk.
REPO_KEYS = frozenset({"memory", "cpus", "pids"})


@dataclass(frozen=True)
class Flags:
    """The command-line values that settings are resolved from (None: not given)."""

    runtime: str | None = None
    debug: bool = False
    channel: str | None = None
    program_channel: str | None = None  # from the launcher's name (run-claude-nightly)
    program: str | None = None
    memory: str | None = None
    cpus: str | None = None
    disk_limit: str | None = None
    labels: tuple[str, ...] = ()
    expose_ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkSettings:
    """The user's ``[network]`` settings (config.toml)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bounds:
    """What the host takes from a session at most, and for how long it waits (the defaults above).

    Each value names the setting that changes it, so an error that hits one can say how.
    """

    export_timeout: float = DEFAULT_EXPORT_TIMEOUT
    export_max: int = DEFAULT_EXPORT_MAX
    egress_log_max: int = DEFAULT_EGRESS_LOG_MAX

    @staticmethod
    def how_to_change(name: str) -> str:
        env = f"CONTAINAI_{name.upper()}"
        return f"set {env}, or {name} in [{SETTINGS_TABLE}] of config.toml"


@dataclass(frozen=True)
class Hooks:
    """What only the engine tests set, by injecting it (tests/engine/lab_cli.py).

    ContainAI reads none of it from the environment or a file: each would let whoever sets it weaken
    a session (lift the private-range deny list) or send a secret elsewhere (the login's refresh).
    """

    lab: Lab | None = None  # the proxy on a fake internet, whose range is then not private
    claude_token_url: str | None = None  # a stand-in for the Claude login's refresh endpoint
    login_check_seconds: float | None = None  # how often the session's broker checks that login

    def rows(self) -> list[tuple[str, str, str]]:
        found = [(name, str(value)) for name, value in vars(self).items() if value is not None]
        return [(name, value, "injected by the test harness") for name, value in found]


@dataclass(frozen=True)
class Settings:
    """Everything a ContainAI command may be configured by, resolved once; frozen."""

    paths: Resolved[Paths]
    runtime: Resolved[str | None]  # None: DOCKER_HOST, then the usual sockets (runtime/select.py)
    debug: Resolved[bool]
    channel: Resolved[str]
    memory: Resolved[int]  # bytes, swap included
    cpus: Resolved[int]  # nano-CPUs
    pids: Resolved[int]
    disk_limit: Resolved[int]  # bytes
    disk_files: Resolved[int]
    workspace: Resolved[str | None]  # overlay or clone; None: chosen per session
    labels: Resolved[Mapping[str, str]]
    gateway_upstream: Resolved[str | None]
    gate_max_blob: Resolved[int]
    gate_git_memory: Resolved[int]  # bytes of address space for each host git process of the gate
    npm_registry: Resolved[str]
    extra_ca_cert: Resolved[Path | None]
    network: Resolved[NetworkSettings]
    export_timeout: Resolved[float] = Resolved(float(DEFAULT_EXPORT_TIMEOUT), "default")
    export_max: Resolved[int] = Resolved(DEFAULT_EXPORT_MAX, "default")
    egress_log_max: Resolved[int] = Resolved(DEFAULT_EGRESS_LOG_MAX, "default")
    # Ignored files an overlay workspace shows the agent (workspace/hide.py); never from a repository.
    expose_ignored: Resolved[tuple[str, ...]] = Resolved((), "default")
    hooks: Hooks = Hooks()  # the engine tests' only

    @property
    def bounds(self) -> Bounds:
        return Bounds(self.export_timeout.value, self.export_max.value, self.egress_log_max.value)

    def rows(self) -> list[tuple[str, str, str]]:
        """(name, value, source) for each setting, as `containai doctor --settings` shows them."""
        shown: list[tuple[str, str, str]] = []
        for name in SETTING_NAMES:
            resolved: Resolved[Any] = getattr(self, name)
            shown.append((name, _display(name, resolved.value), resolved.source))
        return shown + self.hooks.rows()

    def to_json(self) -> dict[str, Any]:
        return {name: {"value": value, "source": source} for name, value, source in self.rows()}

    def gate_policy(self) -> GatePolicy:
        """The git gate's limits, from these settings."""
        from containai.workspace.gate import GatePolicy

        return GatePolicy(
            max_blob_bytes=self.gate_max_blob.value, git_memory_bytes=self.gate_git_memory.value
        )


SETTING_NAMES = (
    "paths",
    "runtime",
    "debug",
    "channel",
    "memory",
    "cpus",
    "pids",
    "disk_limit",
    "disk_files",
    "workspace",
    "labels",
    "gateway_upstream",
    "gate_max_blob",
    "gate_git_memory",
    "npm_registry",
    "extra_ca_cert",
    "network",
    "export_timeout",
    "export_max",
    "egress_log_max",
    "expose_ignored",
)
_FILE_KEYS: dict[str, type | tuple[type, ...]] = {
    "channel": str,
    "memory": str,
    "cpus": (str, int, float),
    "pids": int,
    "disk_limit": (str, int),
    "disk_files": int,
    "workspace": str,
    "gateway_upstream": str,
    "gate_max_blob": (str, int),
    "gate_git_memory": (str, int),
    "npm_registry": str,
    "export_timeout": (str, int),
    "export_max": (str, int),
    "egress_log_max": (str, int),
    "expose_ignored": str,
}


def _display(name: str, value: Any) -> str:
    if value is None:
        return "auto" if name in ("runtime", "workspace") else "none"
    if name in ("memory", "gate_max_blob", "gate_git_memory", "disk_limit", "export_max", "egress_log_max"):
        return _size_text(int(value))
    if name == "cpus":
        return f"{value / 10**9:g}"
    if name == "export_timeout":
        return f"{value:g}s"
    if name == "paths":
        return str(value.config_dir.parent if value.config_dir.name == "config" else value.config_dir)
    if name == "expose_ignored":
        return ",".join(value) or "none"
    if name == "labels":
        return " ".join(f"{k}={v}" for k, v in value.items()) or "none"
    if name == "network":
        parts = [f"{what}: {', '.join(items)}" for what, items in vars(value).items() if items]
        return "; ".join(parts) or "none"
    return str(value)


def _size_text(value: int) -> str:
    for unit, size in (("t", 2**40), ("g", 2**30), ("m", 2**20), ("k", 2**10)):
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def parse_size(text: str, what: str) -> int:
    """Bytes, or a size with k, m, g or t."""
    import re

    match = re.fullmatch(r"(\d+)([kmgt]?)b?", text.strip().lower())
    if not match:
        raise ConfigError(f"{what}={text!r} is not a size", hint="use bytes or a size like 100m")
    return int(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2)]


def _settings_table(data: Mapping[str, Any], where: Path, *, repo: bool) -> dict[str, str]:
    allowed = sorted(REPO_KEYS if repo else _FILE_KEYS)
    table = data.get(SETTINGS_TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{SETTINGS_TABLE}] is not a table", hint="write it as [settings]")
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(
                f"{where}: [{SETTINGS_TABLE}] {key} is not a setting "
                + ("a repository may set" if repo else "ContainAI knows"),
                hint=f"the settings there are {', '.join(sorted(allowed))}",
            )
        if not isinstance(value, _FILE_KEYS[key]) or isinstance(value, bool):
            raise ConfigError(
                f"{where}: [{SETTINGS_TABLE}] {key} = {value!r} has the wrong type",
                hint="see docs/configuration.md for the settings and their types",
            )
    return {key: str(value) if not isinstance(value, str) else value for key, value in table.items()}


REPO_CONFIG_MAX_BYTES = 256 * 2**10  # a repository's config is a few lines; its content is untrusted
# The tables a repository's config may hold: its settings, the domains and the MCP servers it asks for.
REPO_TABLES = frozenset({SETTINGS_TABLE, "network", "mcp_servers"})


def load_repo_config(repo: Path) -> dict[str, Any]:
    """A repository's .containai/config.toml as a table; an empty one when it has none.

    The file is the repository's, so untrusted: it must be a regular file inside the repository (not a
    link out of it, nor a device), at most ``REPO_CONFIG_MAX_BYTES``, valid TOML, with only the
    tables in ``REPO_TABLES``. Anything else is refused with one line that says what to fix.
    """
    path = repo / REPO_SETTINGS
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise ConfigError(
            f"cannot read {path}: {reason}", hint="make it a plain file in the repository, or remove it"
        ) from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path} is not a plain file", hint="make it a plain file, or remove it")
        if not Path(os.path.realpath(path.parent)).is_relative_to(Path(os.path.realpath(repo))):
            raise ConfigError(
                f"{path} lies outside the repository (through a link)", hint="make .containai a plain folder"
            )
        data = handle.read(REPO_CONFIG_MAX_BYTES + 1)
    if len(data) > REPO_CONFIG_MAX_BYTES:
        raise ConfigError(
            f"{path} is larger than {REPO_CONFIG_MAX_BYTES // 2**10} KiB",
            hint="a repository's config holds a few settings, domains and servers: shorten it",
        )
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text", hint="fix the file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the file") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path} nests too deeply", hint="fix the file") from exc
    unknown = sorted(set(table) - REPO_TABLES)
    if unknown:
        shown = ", ".join(repr(key)[:40] for key in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise ConfigError(
            f"{path}: {shown} is not something a repository's config may hold",
            hint=f"the tables there are {', '.join(sorted(REPO_TABLES))}; remove the rest",
        )
    return table


def resolve_settings(
    flags: Flags,
    environ: Mapping[str, str],
    *,
    repo: Path | None = None,
    paths: Paths | None = None,
    cpu_count: Callable[[], int | None] = os.cpu_count,
    hooks: Hooks | None = None,
) -> Settings:
    """Flags > environment > the repository's file > the user's file > defaults, each with its source."""
    from containai.egress.policy import parse_network_config
    from containai.hostgit import DEFAULT_MEMORY as GIT_MEMORY
    from containai.images.catalog import parse_channel
    from containai.session.extra_args import parse_extra_args
    from containai.session.naming import parse_scope
    from containai.session.plan import parse_cpus, parse_memory
    from containai.workspace.gate import GatePolicy
    from containai.workspace.hide import parse_patterns

    resolved_paths = (
        Resolved(paths, "given")
        if paths is not None
        else Resolved(
            Paths.from_env(environ),
            "environment CONTAINAI_HOME" if environ.get("CONTAINAI_HOME") else "default (XDG directories)",
        )
    )
    where = resolved_paths.value.config_file
    user_data = load_user_config(resolved_paths.value)
    user = _settings_table(user_data, where, repo=False)
    repo_table = _settings_table(load_repo_config(repo), repo / REPO_SETTINGS, repo=True) if repo else {}
    extra = parse_extra_args(environ.get("CONTAINAI_EXTRA_DOCKER_ARGS", ""))

    def pick(name: str, *given: tuple[str | None, str]) -> Resolved[str | None]:
        """The first layer that has ``name``, as text, and where it came from: the ``given`` layers
        (flags, then the environment) in order, then the repository's file, the user's, the default."""
        for value, source in given:
            if value:
                return Resolved(value, source)
        if name in repo_table and repo is not None:
            return Resolved(repo_table[name], f"{repo / REPO_SETTINGS} [{SETTINGS_TABLE}]")
        if name in user:
            return Resolved(user[name], f"{where} [{SETTINGS_TABLE}]")
        return Resolved(None, "default")

    def env(name: str) -> tuple[str | None, str]:
        return environ.get(name), f"environment {name}"

    def convert(found: Resolved[str | None], parse: Callable[[str], T], default: T) -> Resolved[T]:
        if found.value is None:
            return Resolved(default, found.source)
        try:
            return Resolved(parse(found.value), found.source)
        except ContainAIError as exc:
            exc.message = f"{exc.message} (from {found.source})"
            raise

    extra_env = "environment CONTAINAI_EXTRA_DOCKER_ARGS"
    available = max(1, cpu_count() or 1)
    scope_words = [*environ.get("CONTAINAI_LABELS", "").split(), *flags.labels]
    label_sources = [
        *(["environment CONTAINAI_LABELS"] if environ.get("CONTAINAI_LABELS", "").split() else []),
        *(["flag --label"] if flags.labels else []),
    ]
    ca_env = environ.get("CONTAINAI_EXTRA_CA_CERT")
    recorded = resolved_paths.value.recorded_ca
    allow, deny, presets = parse_network_config(user_data.get("network", {}), f"{where} [network]")
    debug_env = environ.get("CONTAINAI_DEBUG")
    return Settings(
        paths=resolved_paths,
        runtime=pick("runtime", (flags.runtime, "flag --runtime"), env("CONTAINAI_RUNTIME")),
        debug=Resolved(True, "flag --debug")
        if flags.debug
        else Resolved(debug_env == "1", "environment CONTAINAI_DEBUG")
        if debug_env
        else Resolved(False, "default"),
        channel=convert(
            pick(
                "channel",
                (flags.channel, "flag --channel"),
                (flags.program_channel, f"the launcher's name ({flags.program})"),
                env("CONTAINAI_CHANNEL"),
            ),
            parse_channel,
            DEFAULT_CHANNEL,
        ),
        memory=convert(
            pick("memory", (flags.memory, "flag --memory"), (extra.memory, extra_env)),
            parse_memory,
            parse_memory(DEFAULT_MEMORY),
        ),
        cpus=convert(
            pick("cpus", (flags.cpus, "flag --cpu"), (extra.cpus, extra_env)),
            lambda text: parse_cpus(text, available),
            min(DEFAULT_MAX_CPUS, available) * 10**9,
        ),
        pids=convert(
            pick("pids", (str(extra.pids_limit) if extra.pids_limit else None, extra_env)),
            _parse_pids,
            DEFAULT_PIDS,
        ),
        disk_limit=convert(
            pick("disk_limit", (flags.disk_limit, "flag --disk-limit"), env("CONTAINAI_DISK_LIMIT")),
            _parse_disk_limit,
            DEFAULT_DISK_LIMIT_BYTES,
        ),
        disk_files=convert(
            pick("disk_files", env("CONTAINAI_DISK_FILES")), _parse_disk_files, DEFAULT_DISK_FILES
        ),
        workspace=pick("workspace", env("CONTAINAI_WORKSPACE")),
        labels=Resolved(parse_scope(scope_words), " and ".join(label_sources) or "default"),
        gateway_upstream=pick("gateway_upstream", env("CONTAINAI_GATEWAY_UPSTREAM")),
        gate_max_blob=convert(
            pick("gate_max_blob", env("CONTAINAI_GATE_MAX_BLOB")),
            lambda text: parse_size(text, "gate_max_blob"),
            GatePolicy().max_blob_bytes,
        ),
        gate_git_memory=convert(
            pick("gate_git_memory", env("CONTAINAI_GATE_GIT_MEMORY")),
            lambda text: parse_size(text, "gate_git_memory"),
            GIT_MEMORY,
        ),
        npm_registry=convert(pick("npm_registry", env("CONTAINAI_NPM_REGISTRY")), str, DEFAULT_NPM_REGISTRY),
        extra_ca_cert=Resolved(Path(ca_env), "environment CONTAINAI_EXTRA_CA_CERT")
        if ca_env
        else Resolved(recorded, f"recorded at {recorded}")
        if recorded.is_file()
        else Resolved(None, "default"),
        network=Resolved(
            NetworkSettings(allow=allow, deny=deny, presets=presets),
            f"{where} [network]" if "network" in user_data else "default",
        ),
        export_timeout=convert(
            pick("export_timeout", env("CONTAINAI_EXPORT_TIMEOUT")),
            _parse_seconds,
            float(DEFAULT_EXPORT_TIMEOUT),
        ),
        export_max=convert(
            pick("export_max", env("CONTAINAI_EXPORT_MAX")),
            lambda text: _parse_positive_size(text, "export_max"),
            DEFAULT_EXPORT_MAX,
        ),
        egress_log_max=convert(
            pick("egress_log_max", env("CONTAINAI_EGRESS_LOG_MAX")),
            lambda text: _parse_positive_size(text, "egress_log_max", least=64 * 2**10),
            DEFAULT_EGRESS_LOG_MAX,
        ),
        expose_ignored=convert(
            pick(
                "expose_ignored",
                (",".join(flags.expose_ignored), "flag --expose-ignored"),
                env("CONTAINAI_EXPOSE_IGNORED"),
            ),
            lambda text: parse_patterns([text]),
            (),
        ),
        hooks=hooks or Hooks(),
    )


def _parse_disk_limit(text: str) -> int:
    value = parse_size(text, "disk_limit")
    if value < 2**20:
        raise ConfigError(f"disk_limit {text!r} is under 1m", hint="give a session at least 1m, e.g. 50g")
    return value


def _parse_disk_files(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"disk_files {text!r} is not a number of files", hint="use a number like 1000000")
    return int(text)


def _parse_seconds(text: str) -> float:
    import math

    try:
        seconds = float(text.strip().removesuffix("s"))
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"export_timeout {text!r} is not a number of seconds", hint="give e.g. 600 or 90s")
    return seconds


def _parse_positive_size(text: str, what: str, *, least: int = 1) -> int:
    size = parse_size(text, what)
    if size < least:
        raise ConfigError(f"{what}={text!r} is too small", hint=f"give at least {_size_text(least)}")
    return size


def _parse_pids(text: str) -> int:
    from containai.session.extra_args import MAX_PIDS

    if not text.isdigit() or not 0 < int(text) <= MAX_PIDS:
        raise ConfigError(f"pids {text!r} is not a number from 1 to {MAX_PIDS}", hint="unlimited is refused")
    return int(text)
