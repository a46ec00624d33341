"""Where host secrets live, and which one wins.

    SecretSource (read: get, names)          SecretStore (also set, delete)
    ├── EnvFileSource     ~/.config/containai/mcp-secrets.env, kept by hand
    ├── EnvironmentSource the host's environment, only the names asked for
    ├── FileStore         ~/.config/containai/secrets.env, kept by `containai secrets set|rm`
    └── KeyringStore      the OS keyring, when the `keyring` package and a real backend are there

``resolve_secret`` looks in order: OS keyring, the ContainAI store, mcp-secrets.env, the environment,
and says where the value came from. Files of secrets must be the user's own and private (0600): a
file others can read is refused, as ssh refuses a private key, so the user learns of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import os
import shlex
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast

from containai.config import Paths
from containai.errors import ConfigError, UsageError
from containai.secrets.envfile import is_valid_name, parse_env_file, render_env_file
from containai.secrets.value import Secret

log = logging.getLogger("containai.secrets")

MCP_SECRETS_FILE = "mcp-secrets.env"
KEYRING_SERVICE = "containai"
MAX_VALUE_BYTES = 1 << 20
_KEYRING_INDEX = ".index"  # a username no secret can have (names have no dots): the list of our names


class SecretSource(Protocol):
    """Somewhere secrets can be read from."""

    @property
    def kind(self) -> str:
        """A fixed word for scripts: keyring, store, env-file or environment."""
        ...

    @property
    def label(self) -> str:
        """Where, for people: the file's path or the keyring's name."""
        ...

    def get(self, name: str) -> Secret | None: ...

    def names(self) -> list[str]: ...


class SecretStore(SecretSource, Protocol):
    """A source that `containai secrets set|rm` can also change."""

    def set(self, name: str, value: Secret) -> None: ...

    def delete(self, name: str) -> bool:
        """Remove ``name``; False when it was not there."""
        ...


def check_name(name: str) -> str:
    if not is_valid_name(name):
        raise UsageError(
            "that is not a valid secret name",  # not quoted back: a mistyped command may have put a value there
            hint="use letters, digits and _, not starting with a digit, e.g. GITHUB_TOKEN",
        )
    return name


# Private files -----------------------------------------------------------------------------------------


def read_private_file(path: Path) -> str | None:
    """The text of a secrets file, or None when there is none; refuses one that is not private to us."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang us; it fails the regular-file check below.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="check its permissions") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())  # of what we opened, so a swap after a check cannot fool us
        quoted = _shell_quote(path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path} is not a regular file", hint=f"remove it: `rm {quoted}`")
        if info.st_uid != os.getuid():
            raise ConfigError(
                f"{path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); refusing to read secrets from it",
                hint=f"if its content is yours, take it over: `sudo chown {os.getuid()} {quoted}`",
            )
        if info.st_mode & 0o077:
            raise ConfigError(
                f"{path} can be read or changed by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                "refusing to read secrets from it",
                hint=f"`chmod 600 {quoted}`, then rotate any secret in it that others could have read",
            )
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # The codec's message quotes bytes of the file; say only where to look.
        raise ConfigError(f"{path} is not UTF-8 text", hint="save it as UTF-8") from None


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically; the file is 0600 from its creation, its directory 0700.

    A reader sees the old file or the new one, never a part; a failure leaves the old one as it was.
    """
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = directory / f".{path.name}.{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)  # os.replace: atomic within one filesystem
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise ConfigError(
            f"cannot write {path}: {exc.strerror or exc}",
            hint="check free space and the directory's permissions; the previous file is unchanged",
        ) from exc
    with contextlib.suppress(OSError):  # make the rename itself durable; not every filesystem allows it
        dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of ``path`` between concurrent `containai secrets` commands."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _shell_quote(path: Path) -> str:
    return shlex.quote(str(path))


# Sources -----------------------------------------------------------------------------------------------


class EnvFileSource:
    """A hand-kept env file of secrets (mcp-secrets.env); read-only."""

    kind = "env-file"

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def label(self) -> str:
        return str(self.path)

    def _read(self) -> dict[str, Secret]:
        text = read_private_file(self.path)
        return {} if text is None else parse_env_file(text, str(self.path))

    def get(self, name: str) -> Secret | None:
        return self._read().get(name)

    def names(self) -> list[str]:
        return sorted(self._read())


class EnvironmentSource:
    """The host environment; read-only, and never listed: it answers only for names asked for."""

    kind = "environment"
    label = "environment"

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> Secret | None:
        value = self._environ.get(name)
        return None if value is None else Secret(value)

    def names(self) -> list[str]:
        return []


class FileStore(EnvFileSource):
    """ContainAI's own store: an env file written only by `containai secrets set|rm`, atomically, 0600."""

    kind = "store"

    def set(self, name: str, value: Secret) -> None:
        check_name(name)
        with _locked(self.path):
            values = self._read()
            values[name] = value
            write_private_file(self.path, render_env_file(values))
        log.debug("stored secret %s in %s", name, self.path)

    def delete(self, name: str) -> bool:
        with _locked(self.path):
            values = self._read()
            if values.pop(name, None) is None:
                return False
            write_private_file(self.path, render_env_file(values))
        log.debug("removed secret %s from %s", name, self.path)
        return True


class KeyringBackend(Protocol):
    """The part of a `keyring` backend we use."""

    def get_password(self, service: str, username: str) -> str | None: ...

    def set_password(self, service: str, username: str, password: str) -> None: ...

    def delete_password(self, service: str, username: str) -> None: ...


_UNSAFE_BACKENDS = (
    "keyring.backends.fail",  # "no backend": every call raises
    "keyring.backends.null",  # accepts and forgets
    "keyrings.alt",  # plain or home-made encrypted files: no better than our own 0600 store
)


def system_keyring() -> KeyringBackend | None:
    """The OS keyring through the optional `keyring` package, or None when it is missing or not real."""
    try:
        module: Any = importlib.import_module("keyring")
        backend: Any = module.get_keyring()
        priority = float(backend.priority)
    except Exception as exc:  # an absent package or a broken D-Bus both mean "no keyring"
        log.debug("no OS keyring: %s", type(exc).__name__)
        return None
    kind = f"{type(backend).__module__}.{type(backend).__name__}"
    if priority <= 0 or kind.startswith(_UNSAFE_BACKENDS):
        log.debug("OS keyring backend %s not used (priority %s)", kind, priority)
        return None
    return cast(KeyringBackend, backend)


class KeyringStore:
    """Secrets in the OS keyring, under the service ``containai``.

    Keyrings cannot list entries, so the store keeps the list of its names in one more entry.
    """

    kind = "keyring"

    def __init__(self, backend: KeyringBackend | None = None, *, service: str = KEYRING_SERVICE) -> None:
        self._backend = backend
        self.service = service

    @classmethod
    def from_system(cls) -> KeyringStore:
        return cls(system_keyring())

    def available(self) -> bool:
        return self._backend is not None

    @property
    def label(self) -> str:
        backend = type(self._backend).__name__ if self._backend is not None else "none"
        return f"OS keyring ({backend}, service {self.service})"

    def require(self) -> KeyringBackend:
        if self._backend is None:
            raise ConfigError(
                "no usable OS keyring",
                hint="install the keyring extra (`pip install 'containai[keyring]'`) on a desktop with a keyring "
                "service, or leave out --keyring to use ContainAI's own 0600 file",
            )
        return self._backend

    def _call(self, what: str, call: Any, *args: str) -> Any:
        try:
            return call(self.service, *args)
        except Exception as exc:
            # Only the class name: a backend's message is not ours to vet, and `set` passes the value.
            raise ConfigError(
                f"the OS keyring failed to {what} ({type(exc).__name__})",
                hint="unlock the keyring and retry; the ContainAI log file has the details",
            ) from None

    def get(self, name: str) -> Secret | None:
        if self._backend is None:
            return None
        value = self._call("read a secret", self._backend.get_password, name)
        return None if value is None else Secret(str(value))

    def names(self) -> list[str]:
        if self._backend is None:
            return []
        raw = self._call("read its index", self._backend.get_password, _KEYRING_INDEX)
        try:
            listed = json.loads(raw) if raw else []
        except ValueError:
            listed = []
        return sorted({n for n in listed if isinstance(n, str) and is_valid_name(n)})

    def _write_index(self, names: set[str]) -> None:
        backend = self.require()
        self._call("write its index", backend.set_password, _KEYRING_INDEX, json.dumps(sorted(names)))

    def set(self, name: str, value: Secret) -> None:
        check_name(name)
        backend = self.require()
        self._call("store a secret", backend.set_password, name, value.reveal())
        self._write_index({*self.names(), name})
        log.debug("stored secret %s in %s", name, self.label)

    def delete(self, name: str) -> bool:
        backend = self.require()
        present = self._call("read a secret", backend.get_password, name) is not None
        if present:
            self._call("delete a secret", backend.delete_password, name)
        listed = set(self.names())
        if name in listed:
            self._write_index(listed - {name})
        return present


# Resolution --------------------------------------------------------------------------------------------


def mcp_secrets_file(paths: Paths) -> Path:
    return paths.config_dir / MCP_SECRETS_FILE


def keyring_wanted(environ: Mapping[str, str]) -> bool:
    """CONTAINAI_KEYRING=1/0 decides; unset, the keyring is used unless CONTAINAI_HOME is set.

    CONTAINAI_HOME keeps everything under one directory (tests, portable installs); the OS keyring is
    outside it, so a test run must not read or delete the user's real entries.
    """
    choice = environ.get("CONTAINAI_KEYRING", "").strip().lower()
    if choice in ("1", "on", "yes", "true"):
        return True
    if choice in ("0", "off", "no", "false"):
        return False
    return not environ.get("CONTAINAI_HOME")


def writable_stores(paths: Paths, environ: Mapping[str, str]) -> list[SecretStore]:
    """The stores `containai secrets set|rm` change, in precedence order."""
    stores: list[SecretStore] = []
    if keyring_wanted(environ):
        keyring_store = KeyringStore.from_system()
        if keyring_store.available():
            stores.append(keyring_store)
    stores.append(FileStore(paths.secrets_file))
    return stores


def default_sources(paths: Paths, environ: Mapping[str, str]) -> list[SecretSource]:
    """Every source in precedence order: keyring, ContainAI's store, mcp-secrets.env, environment."""
    return [
        *writable_stores(paths, environ),
        EnvFileSource(mcp_secrets_file(paths)),
        EnvironmentSource(environ),
    ]


def host_lookup(paths: Paths, environ: Mapping[str, str]) -> Callable[[str], Secret | None]:
    """A broker's lookup: the value of a secret name from the host's sources, asked anew each time."""
    sources = default_sources(paths, environ)

    def lookup(name: str) -> Secret | None:
        found = resolve_secret(name, sources)
        return found[0] if found else None

    return lookup


def resolve_secret(name: str, sources: Sequence[SecretSource]) -> tuple[Secret, str] | None:
    """The first source's value for ``name`` and that source's label; None when no source has it."""
    for source in sources:
        value = source.get(name)
        if value is not None:
            return value, source.label
    return None


@dataclass(frozen=True)
class Listing:
    """One secret name: the source that wins, and the ones it hides. Never a value."""

    name: str
    source: str
    kind: str
    shadowed: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "source": self.source, "kind": self.kind, "shadowed": list(self.shadowed)}


def list_secrets(sources: Sequence[SecretSource]) -> list[Listing]:
    """Every name some listable source holds; the environment counts only for names found elsewhere."""
    names = sorted({name for source in sources for name in source.names()})
    listings = []
    for name in names:
        holders = [source for source in sources if source.get(name) is not None]
        if holders:
            first = holders[0]
            listings.append(Listing(name, first.label, first.kind, tuple(s.label for s in holders[1:])))
    return listings


def secret_from_input(data: bytes, origin: str) -> Secret:
    """A value given on stdin or in a file: UTF-8, one trailing newline dropped, not empty, no NUL."""
    if len(data) > MAX_VALUE_BYTES:
        raise UsageError(
            f"the value from {origin} is over {MAX_VALUE_BYTES} bytes", hint="store a smaller value"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(
            f"the value from {origin} is not UTF-8 text", hint="store binary material base64-encoded"
        ) from None
    if text.endswith("\n"):  # what `echo` and editors add
        text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise UsageError(
            f"the value from {origin} is empty", hint="give the secret's value, not an empty one"
        )
    if "\x00" in text:
        raise UsageError(
            f"the value from {origin} holds a NUL byte", hint="store binary material base64-encoded"
        )
    return Secret(text)


def secret_from_file(path: Path) -> Secret:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_VALUE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", hint="give a readable file") from exc
    return secret_from_input(data, str(path))


def secret_from_stream(stream: IO[str], origin: str = "stdin") -> Secret:
    return secret_from_input(stream.read(MAX_VALUE_BYTES + 1).encode("utf-8", "surrogateescape"), origin)


def target_store(paths: Paths, *, keyring: bool) -> SecretStore:
    """Where `containai secrets set` writes: ContainAI's file, or the OS keyring when asked for."""
    if not keyring:
        return FileStore(paths.secrets_file)
    store = KeyringStore.from_system()
    store.require()
    return store


def store_secret(name: str, value: Secret, target: SecretStore, stores: Sequence[SecretStore]) -> list[str]:
    """Put ``name`` in ``target`` and take it out of the other writable stores, so it is the one in use.

    Returns the labels of the stores it was removed from.
    """
    check_name(name)
    target.set(name, value)
    return [store.label for store in stores if store.label != target.label and store.delete(name)]


def remove_secret(name: str, stores: Sequence[SecretStore]) -> list[str]:
    """Remove ``name`` from every writable store; the labels of those that had it."""
    check_name(name)
    return [store.label for store in stores if store.delete(name)]
