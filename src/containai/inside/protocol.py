"""What the host side and the programs in the images agree on: uids, paths, name grammars, words.

One copy of each contract. The host imports it from ``containai.inside.protocol``; the images get
this very file with the rest of ``containai.inside``. Shell scripts and Dockerfiles cannot import
it: where they repeat a value, ``tests/unit/test_inside_protocol.py`` checks that they still agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

# -- users ----------------------------------------------------------------------------------------
# Each sidecar role has a uid of its own, none of them the agent's (1000) or root: a process of one
# role can neither signal, trace nor read the /proc files of another.

AGENT_UID: Final = 1000
"""The agent user of the base image."""
STUB_UID: Final = 65531
"""User ``containai-mcp`` of the base image; reserved, no longer the uid of any MCP server."""
MCP_SERVER_UID_FIRST: Final = 65500
MCP_SERVER_UID_COUNT: Final = 30
"""Each MCP server of a session runs (its stub and the server) under a uid of its own, the server's
index in the session plus ``MCP_SERVER_UID_FIRST``: 65500 to 65529, no user of those names exists.
A server cannot read another's files, /proc entries or memory, nor redeem its capability."""
GATEWAY_UID: Final = 65532
"""The model-credential gateway (user ``gateway`` in the gateway image): holds the real API key."""
RELAY_UID: Final = 65533
"""The socat relays in the agent's container (egress proxy, gateway); no user of that name exists."""
LOGFWD_UID: Final = 65530
"""The log forwarder (user ``logfwd`` in the logfwd image)."""


def mcp_server_uid(index: int) -> int:
    """The uid of a session's ``index``-th MCP server (from 0); ValueError past the reserved range."""
    if not 0 <= index < MCP_SERVER_UID_COUNT:
        raise ValueError(f"a session has at most {MCP_SERVER_UID_COUNT} MCP servers")
    return MCP_SERVER_UID_FIRST + index


def is_mcp_server_uid(uid: int) -> bool:
    return MCP_SERVER_UID_FIRST <= uid < MCP_SERVER_UID_FIRST + MCP_SERVER_UID_COUNT


def user(uid: int) -> str:
    """``uid:gid`` for an engine's ``--user``: every role's group is its own uid."""
    return f"{uid}:{uid}"


# -- programs (the launchers the image build installs) --------------------------------------------

BIN: Final = "/usr/local/bin"
LIBRARY: Final = "/usr/local/lib/containai"
"""Where the images hold this package (as ``containai/inside``); the launchers put it on sys.path."""
STUB_PROGRAM: Final = f"{BIN}/mcp-stub"
ENTRYPOINT_PROGRAM: Final = f"{BIN}/containai-entrypoint"
GATEWAY_PROGRAM: Final = f"{BIN}/containai-gateway"
LOGFWD_PROGRAM: Final = f"{BIN}/containai-logfwd"

# -- the agent's container ------------------------------------------------------------------------

ENV_ALLOW_FILE: Final = "/etc/containai/env-allow"
"""The entrypoint's environment allow-list (images/context/base/env-allow)."""
WORKSPACE: Final = "/workspace"

STUB_STATE: Final = "/run/containai/mcp"
"""Where each MCP server's stub has its state directory, ``STUB_STATE/NAME``: a tmpfs of that
server's uid, mode 0711 (the agent reaches its front socket by name, and lists nothing)."""
FRONT_SOCKET_NAME: Final = "front.sock"
STUB_LOG_NAME: Final = "stub.log"
STUB_NOT_SERVING: Final = "not serving: "
"""What the stub's last log line says before its reason when it does not start; the launcher quotes it."""

BROKER_DIR: Final = "/run/containai/broker"
"""Where the session broker's stub socket directory is bind-mounted into the agent's container."""
BROKER_SOCKET_NAME: Final = "broker.sock"
BROKER_SOCKET: Final = f"{BROKER_DIR}/{BROKER_SOCKET_NAME}"

# -- sidecar sockets (on volumes shared with the agent's container) -------------------------------

EGRESS_DIR: Final = "/run/containai-egress"
PROXY_SOCKET: Final = f"{EGRESS_DIR}/proxy.sock"
"""squid's bridge in the proxy container (images/context/proxy/containai-proxy-start)."""
EGRESS_GATEWAY_DIR: Final = "/run/containai-egress-gateway"
GATEWAY_PROXY_SOCKET: Final = f"{EGRESS_GATEWAY_DIR}/proxy.sock"
"""squid's second bridge, to its gateway-only port, on a volume shared with the gateway alone."""
GATEWAY_DIR: Final = "/run/containai-gateway"
GATEWAY_SOCKET: Final = f"{GATEWAY_DIR}/gateway.sock"

# -- names ----------------------------------------------------------------------------------------

BROKER_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}"
"""The broker's alphabet for session ids, container ids, consumers and secret names (use fullmatch).

They end up in audit lines and in a bundle's associated data, where ambiguity would be a bug. A
``${NAME}`` placeholder whose NAME is not of this grammar stays literal in the stub."""
SERVER_NAME_PATTERN: Final = r"[a-z0-9][a-z0-9_-]{0,40}"
"""An MCP server's name (use fullmatch): a broker consumer name, a file name in the stub's state."""

# -- the broker's stub protocol (one JSON object a line each way) ----------------------------------

OP_REDEEM: Final = "redeem"
OP_REFRESH: Final = "refresh"

# Refusal reasons: the ``error`` of a ``{"ok": false, ...}`` answer, and the audit's ``reason``.
REFUSED: Final = "refused"
MALFORMED: Final = "malformed"
FORGED: Final = "forged"
EXPIRED: Final = "expired"
WRONG_SESSION: Final = "wrong-session"
WRONG_CONTAINER: Final = "wrong-container"
WRONG_CONSUMER: Final = "wrong-consumer"
"""A capability (or a refresh) of one MCP server asked for from another server's uid."""
NOT_LIVE: Final = "not-live"
PEER_REFUSED: Final = "peer-refused"
AUDIT_UNAVAILABLE: Final = "audit-unavailable"
BUNDLE_REFUSED: Final = "bundle-refused"
SECRET_UNAVAILABLE: Final = "secret-unavailable"  # noqa: S105  # a refusal reason, not a password
BAD_REQUEST: Final = "bad-request"
REFUSALS: Final = frozenset(
    {
        REFUSED,
        MALFORMED,
        FORGED,
        EXPIRED,
        WRONG_SESSION,
        WRONG_CONTAINER,
        WRONG_CONSUMER,
        NOT_LIVE,
        PEER_REFUSED,
        AUDIT_UNAVAILABLE,
        BUNDLE_REFUSED,
        SECRET_UNAVAILABLE,
        BAD_REQUEST,
    }
)
RENEWABLE: Final = frozenset({EXPIRED, NOT_LIVE})
"""Refusals that a fresh capability cures: the stub asks for one; any other reaches the agent as it is."""

# -- the gateway's allow rules ---------------------------------------------------------------------
# Each agent definition lists the ``METHOD /path`` pairs its gateway forwards (``[gateway] allow``);
# the host checks them when it reads the definition, the gateway when it starts, with this one grammar.
# A path is whole segments of RFC 3986 path characters without ``%`` and ``;`` (so no encoding or
# parameters that an upstream might read differently), no empty or dot segments; in a rule, ``*``
# stands for any characters within one segment. A request's path must be of the same grammar (without
# ``*``) and match a rule whole; its query string must hold only URL query characters.

GATEWAY_METHOD_PATTERN: Final = r"[A-Z]{1,20}"
_PATH_CHARS: Final = r"A-Za-z0-9._~!$&'()+,=:@\-"
GATEWAY_QUERY_PATTERN: Final = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*"
"""A query string (after the ``?``) the gateway passes on (use fullmatch)."""


def _path_error(path: str, chars: str) -> str | None:
    if not path.startswith("/"):
        return "the path must start with /"
    for segment in path[1:].split("/"):
        if segment in ("", ".", ".."):
            return "the path has an empty or dot segment"
        if not re.fullmatch(f"[{chars}]+", segment):
            return (
                f"the path segment {segment!r} has a character other than letters, digits and -._~!$&'()+,=:@"
            )
    return None


def parse_gateway_rule(text: str) -> tuple[str, str]:
    """``"POST /v1/messages"`` as (method, path); ValueError says what is wrong with it."""
    method, space, path = text.partition(" ")
    if not space or not re.fullmatch(GATEWAY_METHOD_PATTERN, method):
        raise ValueError(f"{text!r} is not METHOD /path")
    error = _path_error(path, _PATH_CHARS + "*")
    if error:
        raise ValueError(f"{text!r}: {error}")
    return method, path


def gateway_rule_regex(path: str) -> re.Pattern[str]:
    """A rule's path as a pattern for fullmatch: ``*`` never crosses a ``/``."""
    return re.compile(re.escape(path).replace(r"\*", "[^/]*"))


def gateway_allows(rules: Iterable[tuple[str, str]], method: str, path: str) -> bool:
    """Whether a request's method and path (without its query) match one of the rules whole."""
    if _path_error(path, _PATH_CHARS) is not None:
        return False
    return any(method == allowed and gateway_rule_regex(rule).fullmatch(path) for allowed, rule in rules)
