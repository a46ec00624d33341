"""Which domains a session may reach: parsing user-given names, presets, and merging the sources.

Everything here is pure. The policy is decided on names only: squid matches it with
``dstdomain -n`` before any name is resolved (see ``squid.py``), so a name that is refused here is
never looked up in DNS.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from containai.errors import ConfigError, ContainAIError, UsageError

MiB = 1024 * 1024
GiB = 1024 * MiB

PRESETS: dict[str, tuple[str, ...]] = {
    "npm": ("registry.npmjs.org", "registry.yarnpkg.com"),
    "pypi": ("pypi.org", "files.pythonhosted.org"),
    "github": (
        "github.com",
        "api.github.com",
        "codeload.github.com",
        "objects.githubusercontent.com",
        "raw.githubusercontent.com",
    ),
    "debian": ("deb.debian.org", "security.debian.org"),
    "crates": ("crates.io", "static.crates.io", "index.crates.io"),
    "go": ("proxy.golang.org", "sum.golang.org"),
}

_DOMAIN_HINT = "give a host name such as registry.npmjs.org, or .example.com for a domain and its subdomains"
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# WHATWG URL parsers read a host whose last label is a number (decimal, or 0x-hex) as an IPv4
# address in any of its encodings (3323068436, 0xC6.0x12.0.20, 0306.022.0.024); no TLD is numeric.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_FORBIDDEN = {"@": "'@'", "/": "'/'", ":": "':'", "#": "'#'", "%": "'%'", "?": "'?'", "\\": "'\\'"}


def _refuse(text: str, source: str, reason: str, error: type[ContainAIError]) -> ContainAIError:
    return error(f"{source}: {text!r} is not a domain name: {reason}", hint=_DOMAIN_HINT)


def _is_ip_literal(name: str) -> bool:
    candidate = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        return True
    if name.startswith("[") or name.count(":") >= 2:
        return True
    labels = [label for label in name.split(".") if label]
    return bool(labels) and _NUMERIC_LABEL.match(labels[-1]) is not None


def parse_domain(text: str, source: str, *, error: type[ContainAIError] = ConfigError) -> str:
    """Validate and normalise one user-given domain.

    ``example.com`` means that host only; ``.example.com`` (or ``*.example.com``) means the domain
    and all its subdomains, squid's ``dstdomain`` convention, which is the form returned.
    Pass ``error=UsageError`` for names that came from the command line.
    """
    if not isinstance(text, str):
        raise error(f"{source}: {text!r} is not a domain name: not a string", hint=_DOMAIN_HINT)
    name = text.lower()
    if not name:
        raise _refuse(text, source, "it is empty", error)
    if any(ch.isspace() for ch in name) or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise _refuse(text, source, "it contains white space or control characters", error)
    if _is_ip_literal(name.removesuffix(".")):
        raise _refuse(text, source, "IP addresses are not allowed, only names", error)
    for char, shown in _FORBIDDEN.items():
        if char in name:
            raise _refuse(text, source, f"it contains {shown} (give the host name only)", error)
    if name.endswith("."):
        name = name[:-1]  # the fully qualified form names the same host
    wildcard = False
    if name.startswith("*."):
        wildcard, name = True, name[2:]
    elif name.startswith("."):
        wildcard, name = True, name[1:]
    if "*" in name:
        raise _refuse(text, source, "a wildcard is only allowed as a leading '*.'", error)
    if not name or any(not label for label in name.split(".")):
        raise _refuse(text, source, "it has an empty label", error)
    if not name.isascii():
        try:
            # IDNA 2003 (the stdlib codec); squid and DNS only ever see the ASCII form.
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise _refuse(text, source, f"it cannot be IDNA-encoded ({exc})", error) from exc
        if _is_ip_literal(name):  # full-width digits and dots map to an address
            raise _refuse(text, source, "IP addresses are not allowed, only names", error)
    labels = name.split(".")
    for label in labels:
        if len(label) > 63:
            raise _refuse(text, source, f"the label {label[:20]!r}... is longer than 63 characters", error)
        if not _LABEL.match(label):
            raise _refuse(
                text, source, f"the label {label!r} may only hold letters, digits and inner '-'", error
            )
    if len(name) > 253:
        raise _refuse(text, source, "it is longer than 253 characters", error)
    if len(labels) < 2:
        raise _refuse(text, source, "a top-level domain alone would allow too much", error)
    return f".{name}" if wildcard else name


def covers(pattern: str, name: str) -> bool:
    """Whether the normalised ``pattern`` matches every host ``name`` matches (squid semantics)."""
    if pattern == name:
        return True
    if not pattern.startswith("."):
        return False
    bare = name.removeprefix(".")
    return bare == pattern[1:] or bare.endswith(pattern)


@dataclass(frozen=True)
class EgressPolicy:
    """The names a session may reach, with where each came from, and the proxy's limits.

    ``gateway``: the hosts only the session's model gateway may reach (its upstream). They are on
    no allow list: the agent is refused them even under a wider allowed name, so it cannot carry
    data to the model API with a key of its own (see ``squid.py``).
    """

    session: str
    allow: tuple[str, ...]
    deny: tuple[str, ...] = ()
    gateway: tuple[str, ...] = ()
    connect_ports: tuple[int, ...] = (443,)
    max_request_bytes: int = 100 * MiB
    max_response_bytes: int = 1 * GiB
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.session:
            raise ConfigError("the egress policy has no session id", hint="this is a bug in ContainAI")
        # The renderer writes these names into squid.conf as they are: only normalised names pass.
        for name in (*self.allow, *self.deny):
            if parse_domain(name, "egress policy") != name:
                raise ConfigError(
                    f"egress policy: {name!r} is not normalised", hint="build it with resolve_policy()"
                )
        for name in self.gateway:
            if name.startswith(".") or name in self.allow:
                raise ConfigError(
                    f"egress policy: the gateway's upstream {name!r} must be one host on no allow list",
                    hint="build it with resolve_policy()",
                )
        for port in self.connect_ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigError(
                    f"{port!r} is not a TCP port", hint="connect ports are numbers from 1 to 65535"
                )
        for size in (self.max_request_bytes, self.max_response_bytes):
            if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                raise ConfigError(f"{size!r} is not a size in bytes", hint="give a positive number of bytes")


def _add(into: dict[str, list[str]], names: Iterable[str], source: str, error: type[ContainAIError]) -> None:
    for text in names:
        domain = parse_domain(text, source, error=error)
        if source not in into.setdefault(domain, []):
            into[domain].append(source)


def preset_domains(presets: Sequence[str], source: str = "config") -> dict[str, tuple[str, ...]]:
    """The domains of each named preset; unknown names are refused with the known ones listed."""
    unknown = [name for name in presets if name not in PRESETS]
    if unknown:
        raise ConfigError(
            f"{source}: unknown egress preset {', '.join(repr(name) for name in unknown)}",
            hint=f"known presets: {', '.join(sorted(PRESETS))}",
        )
    return {name: PRESETS[name] for name in presets}


def resolve_policy(
    *,
    session: str,
    agent_endpoints: Mapping[str, Sequence[str]],
    presets: Sequence[str],
    config_allow: Sequence[str],
    config_deny: Sequence[str],
    cli_allow: Sequence[str],
    repo_requested: Sequence[str],
    repo_approved: Sequence[str],
    connect_ports: Sequence[int] = (443,),
    gateway: Sequence[str] = (),
) -> EgressPolicy:
    """Merge every source of allowed names into one policy; a deny always wins over an allow.

    ``agent_endpoints`` maps an agent's name to the endpoints its definition lists. A name the
    repository asks for is kept only if the user approved it (``repo_approved``, collected by the
    caller's prompt). ``sources`` in the result says where each name came from, for ``--explain``
    style output and for the denial summary.

    ``gateway`` lists the upstream hosts of the session's model gateway: each is taken off the
    agent's allow list whoever put it there, and ``sources`` says so.
    """
    allowed: dict[str, list[str]] = {}
    for agent, endpoints in sorted(agent_endpoints.items()):
        _add(allowed, endpoints, f"agent {agent}", ConfigError)
    for name, domains in preset_domains(presets).items():
        _add(allowed, domains, f"preset {name}", ConfigError)
    _add(allowed, config_allow, "config", ConfigError)
    _add(allowed, cli_allow, "--allow-domain", UsageError)
    approved = {parse_domain(text, "repo (approved)") for text in repo_approved}
    requested: dict[str, list[str]] = {}
    _add(requested, repo_requested, "repo", ConfigError)
    _add(allowed, [name for name in requested if name in approved], "repo (approved)", ConfigError)

    denied: dict[str, list[str]] = {}
    _add(denied, config_deny, "config (deny)", ConfigError)
    # An allow that a deny fully covers is dropped; a narrower deny inside a wider allow
    # (allow .example.com, deny evil.example.com) stays in both lists and squid applies it first.
    kept = {name: where for name, where in allowed.items() if not any(covers(deny, name) for deny in denied)}
    sources = {name: ", ".join(where) for name, where in {**kept, **denied}.items()}
    upstreams = sorted({parse_domain(text, "the gateway's upstream") for text in gateway})
    for host in upstreams:
        if host.startswith("."):
            raise ConfigError(
                f"the gateway's upstream {host!r} is a domain, not one host",
                hint="give the upstream as a URL such as https://api.anthropic.com",
            )
        # Only the gateway may reach it: an agent with a key of its own must not (issue 11).
        removed = kept.pop(host, None)
        only = "the model gateway only" + (
            f" (taken off the agent's list: {', '.join(removed)})" if removed else ""
        )
        # A deny still wins, over the gateway too.
        sources[host] = f"{sources[host]}; {only}" if host in denied else only
    return EgressPolicy(
        session=session,
        allow=tuple(sorted(kept)),
        deny=tuple(sorted(denied)),
        gateway=tuple(upstreams),
        connect_ports=tuple(sorted(set(connect_ports))),
        sources=MappingProxyType(dict(sorted(sources.items()))),
    )


def _string_list(data: Mapping[str, object], key: str, source: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(
            f"{source}: `{key}` must be a list of strings", hint=f'e.g. {key} = ["pypi.org", ".example.com"]'
        )
    return tuple(value)


def parse_network_config(
    data: Mapping[str, object], source: str = "config.toml [network]"
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Read a ``[network]`` table: ``allow``, ``deny`` and ``presets``, each a list of strings.

    Returns ``(allow, deny, presets)`` with the domains normalised and the presets checked.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} must be a table", hint="write [network] followed by allow = [...]")
    unknown = sorted(set(data) - {"allow", "deny", "presets"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {', '.join(unknown)}", hint="the keys are allow, deny and presets"
        )
    allow = tuple(parse_domain(text, f"{source} allow") for text in _string_list(data, "allow", source))
    deny = tuple(parse_domain(text, f"{source} deny") for text in _string_list(data, "deny", source))
    presets = _string_list(data, "presets", source)
    preset_domains(presets, source)
    return allow, deny, presets
