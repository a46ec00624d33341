"""Render a session's squid.conf from its ``EgressPolicy``, and read back the audit log it writes.

``render_squid_conf`` is pure: the same policy gives byte-identical text, so a session's proxy
configuration can be diffed, hashed and tested without an engine.

The order of ``http_access`` rules is the security argument (threat catalogue, section D):

1. squid's own surfaces (cache manager, ``/squid-internal-*``) and schemes other than HTTP(S);
2. ports: CONNECT only to ``connect_ports``, plain requests only to 80, 443 and those ports;
3. IP-literal hosts in any encoding, so that an address never stands in for a name;
4. with a model gateway in the session: its upstream for any client but the gateway, then anything
   else for the gateway. The gateway's requests arrive on their own port (``name=gateway``), reached
   only through a socket on a volume the gateway alone mounts; the agent has a key-less gateway but
   could hold a key of its own, and must not carry data to the model API with it (issue 11);
5. names not on the allow list, then names on the deny list: ``dstdomain -n`` compares names
   only, with no reverse lookup (an attacker's PTR record cannot match) and no forward lookup
   (a refused name never reaches DNS);
6. only then ``dst``, which resolves the name: an allowed name that resolves to a private,
   loopback, link-local or metadata address is refused (DNS rebinding);
7. allow the gateway (to its upstream, all that is left for it), then the allow list; deny the rest.

Every rule ends with an ``annotate_transaction`` ACL. That ACL always matches and is reached only
when every ACL before it on the line matched, i.e. exactly when that rule decides; its
``decision`` and ``rule`` notes are then logged with ``%{rule}note``. The first rule's first ACL
notes which port the request came in on, as ``client`` (``agent`` or ``gateway``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from containai.egress.policy import EgressPolicy, covers
from containai.errors import ConfigError

# Everything a name could resolve to that is not the public internet. IPv4-mapped IPv6
# (::ffff:0:0/96) is deliberately absent: squid keeps every IPv4 address in that mapped form,
# so the entry would match the whole internet; the IPv4 ranges already cover mapped addresses.
DEFAULT_PRIVATE_RANGES: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # RFC 1918
    "100.64.0.0/10",  # CGNAT; also Alibaba's metadata service 100.100.100.200
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, cloud metadata 169.254.169.254
    "172.16.0.0/12",  # RFC 1918, Docker's default bridges
    "192.0.0.0/24",  # IETF protocol assignments, Oracle's metadata 192.0.0.192
    "192.0.2.0/24",  # TEST-NET-1
    "192.168.0.0/16",  # RFC 1918
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
    "::/128",  # unspecified
    "::1/128",  # loopback
    "64:ff9b:1::/48",  # local-use NAT64
    "100::/64",  # discard
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique local, AWS metadata fd00:ec2::254
    "fe80::/10",  # link-local
    "fec0::/10",  # deprecated site-local
    "ff00::/8",  # multicast
)

HTTP_PORTS = (80, 443)
AUDIT_FORMAT = "containai_json"
CLIENTS = ("agent", "gateway")  # who sent a request, by the port it came in on

# (rule name, decision) in the order the rules appear; tests check the rendered order against it.
RULES: tuple[tuple[str, str], ...] = (
    ("deny-manager", "deny"),
    ("deny-internal", "deny"),
    ("deny-scheme", "deny"),
    ("deny-connect-port", "deny"),
    ("deny-port", "deny"),
    ("deny-ip-literal", "deny"),
    ("deny-gateway-only", "deny"),
    ("deny-gateway-elsewhere", "deny"),
    ("deny-not-allowed", "deny"),
    ("deny-denylist", "deny"),
    ("deny-private", "deny"),
    ("allow-gateway", "allow"),
    ("allow", "allow"),
    ("deny-default", "deny"),
)

_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
_LISTEN = re.compile(r"^(\[[0-9a-fA-F:.]+\]:|[A-Za-z0-9.-]+:)?[0-9]{1,5}$")
# A host is an IP literal when it is bracketed, holds a colon (IPv6), or ends in a numeric label
# (dotted quads and the decimal, hex and octal encodings squid's resolver would accept).
_IP_LITERAL_PATTERNS = (r"^\[", r":", r"(^|\.)(0x[0-9a-f]*|[0-9]+)\.?$")


def _mark(rule: str) -> str:
    return "mark_" + rule.replace("-", "_")


def _literal(session: str) -> str:
    """The session id as the inside of a JSON string, safe as literal text in a squid logformat.

    ``json.dumps`` makes it printable ASCII; the characters squid's config reader gives meaning
    to (``%`` format codes, ``$`` macros, ``#`` comments) then become JSON ``\\u`` escapes.
    """
    text = json.dumps(session, ensure_ascii=True)[1:-1]
    for char in "%$#":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _collapse(domains: Iterable[str]) -> list[str]:
    """Drop names another entry already covers: squid warns about overlaps in one dstdomain ACL."""
    unique = sorted(set(domains))
    return [name for name in unique if not any(other != name and covers(other, name) for other in unique)]


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise ConfigError(f"{value!r} is not a usable {what} for squid", hint="this is a bug in ContainAI")
    return value


def render_audit_logformat(session: str) -> str:
    """The ``logformat`` body: one JSON object per request.

    Client-controlled text (method, host) uses squid's ``%"`` quoting, which escapes ``"``, ``\\``,
    CR, LF and TAB. Numbers are written as strings because squid prints ``-`` for a missing one,
    which would make the line invalid JSON; ``parse_audit_line`` turns them back into numbers.
    """
    fields = (
        '"time":"%{%Y-%m-%dT%H:%M:%S}tg.%03tuZ"',
        f'"session":"{_literal(session)}"',
        '"method":"%"rm"',
        '"host":"%">rd"',
        '"port":"%>rP"',
        '"status":"%>Hs"',
        '"bytes_up":"%>st"',
        '"bytes_down":"%<st"',
        '"decision":"%"{decision}note"',
        '"rule":"%"{rule}note"',
        '"client":"%"{client}note"',
    )
    return "{" + ",".join(fields) + "}"


def render_squid_conf(
    policy: EgressPolicy,
    *,
    listen: str = "127.0.0.1:3128",
    gateway_listen: str = "127.0.0.1:3129",
    access_log: str = "/var/log/containai/egress.jsonl",
    dns_nameservers: Sequence[str] = (),
    shutdown_seconds: int = 3,
    pid_file: str = "/var/run/squid/squid.pid",
    private_ranges: Sequence[str] = DEFAULT_PRIVATE_RANGES,
    access_log_rotate: int = 0,
) -> str:
    """The complete squid.conf for one session's proxy (squid 5.7, Debian bookworm).

    ``access_log_rotate``: how many rotated audits squid keeps when told to rotate (SIGUSR1): the
    proxy's rotation loop (``egress.sidecar``) keeps the audit's volume under its cap that way.
    ``gateway_listen``: the gateway's own port, there only when the policy has a gateway.
    """
    _check(listen, _LISTEN, "listen address")
    _check(gateway_listen, _LISTEN, "listen address")
    _check(access_log, _PATH, "log path")
    _check(pid_file, _PATH, "pid file path")
    servers = [str(ipaddress.ip_address(server)) for server in dns_nameservers]
    ranges = [str(ipaddress.ip_network(cidr)) for cidr in private_ranges]
    if isinstance(access_log_rotate, bool) or not isinstance(access_log_rotate, int) or access_log_rotate < 0:
        raise ConfigError(f"{access_log_rotate!r} is not a number of rotated logs", hint="give 0 or more")
    if isinstance(shutdown_seconds, bool) or not isinstance(shutdown_seconds, int) or shutdown_seconds < 0:
        raise ConfigError(f"{shutdown_seconds!r} is not a number of seconds", hint="give 0 or more")
    connect_ports = sorted(set(policy.connect_ports))
    safe_ports = sorted(set(HTTP_PORTS) | set(connect_ports))
    allow = _collapse(policy.allow)
    deny = _collapse(policy.deny)
    gateway = sorted(set(policy.gateway))

    out: list[str] = [
        "# Rendered by ContainAI from the session's egress policy; do not edit.",
        f"http_port {listen} name=agent",
        *([f"http_port {gateway_listen} name=gateway"] if gateway else []),
        "visible_hostname containai-proxy",
        f"pid_filename {pid_file}",
        "coredump_dir /tmp",
        "cache deny all",
        "cache_mem 0 MB",
        "via off",
        "forwarded_for delete",
        "request_header_access X-Forwarded-For deny all",
        "httpd_suppress_version_string on",
        "strip_query_terms on",
        f"request_body_max_size {policy.max_request_bytes} bytes",
        f"reply_body_max_size {policy.max_response_bytes} bytes all",
        f"shutdown_lifetime {shutdown_seconds} seconds",
        "logfile_rotate 0",
        "cache_log stdio:/dev/stderr",
    ]
    if servers:
        out.append(f"dns_nameservers {' '.join(servers)}")
    out += [
        f"logformat {AUDIT_FORMAT} {render_audit_logformat(policy.session)}",
        f"access_log stdio:{access_log} logformat={AUDIT_FORMAT}"
        + (f" rotate={access_log_rotate}" if access_log_rotate else ""),
        "",
        "# One always-matching ACL per rule records which rule decided (see the module docstring).",
    ]
    out += [
        f"acl {_mark(rule)} annotate_transaction decision={decision} rule={rule}" for rule, decision in RULES
    ]
    out += [f"acl client_{client} annotate_transaction client={client}" for client in CLIENTS]
    if gateway:
        # Always matches, noting the client: any-of stops at its first match.
        out += [
            "acl from_gateway myportname gateway",
            "acl from_gateway_noted all-of from_gateway client_gateway",
            "acl note_client any-of from_gateway_noted client_agent",
        ]
        out += [f"acl gateway_upstream dstdomain -n {name}" for name in gateway]
    else:
        out.append("acl note_client any-of client_agent")
    out += [
        "",
        "acl internal_url urlpath_regex ^/squid-internal-",
        "acl connect_method method CONNECT",
        "acl web_scheme proto HTTP HTTPS",
        f"acl connect_ports port {' '.join(map(str, connect_ports))}",
        f"acl safe_ports port {' '.join(map(str, safe_ports))}",
        f"acl ip_literal dstdom_regex -n -i {' '.join(_IP_LITERAL_PATTERNS)}",
    ]
    if allow:
        out += [f"acl allowed_domains dstdomain -n {name}" for name in allow]
    if allow or gateway:
        out += [f"acl denied_domains dstdomain -n {name}" for name in deny]
        out += [f"acl private_dst dst {cidr}" for cidr in ranges]

    rules: list[tuple[str, str]] = [
        ("deny note_client manager", "deny-manager"),
        ("deny internal_url", "deny-internal"),
        ("deny !connect_method !web_scheme", "deny-scheme"),
        ("deny connect_method !connect_ports", "deny-connect-port"),
        ("deny !safe_ports", "deny-port"),
        ("deny ip_literal", "deny-ip-literal"),
    ]
    if gateway:
        # Before the allow list, so that no wider allowed name (.anthropic.com) lets the agent in.
        rules.append(("deny !from_gateway gateway_upstream", "deny-gateway-only"))
        rules.append(("deny from_gateway !gateway_upstream", "deny-gateway-elsewhere"))
    agent_only = "!from_gateway " if gateway else ""
    if allow:
        rules.append((f"deny {agent_only}!allowed_domains", "deny-not-allowed"))
    else:
        # squid refuses an ACL with no values; with nothing allowed, only the gateway gets further.
        rules.append((f"deny {agent_only or 'all'}".rstrip(), "deny-not-allowed"))
    if allow or gateway:
        if deny:
            rules.append(("deny denied_domains", "deny-denylist"))
        if ranges:
            rules.append(("deny private_dst", "deny-private"))
    if gateway:
        rules.append(("allow from_gateway", "allow-gateway"))
    if allow:
        rules.append(("allow allowed_domains", "allow"))
    rules.append(("deny all", "deny-default"))
    out += ["", *(f"http_access {action} {_mark(rule)}" for action, rule in rules)]
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class AuditRecord:
    """One request as the proxy logged it."""

    time: str
    session: str
    method: str
    host: str
    port: int | None
    status: int | None
    bytes_up: int
    bytes_down: int
    decision: str  # "allow" or "deny"
    rule: str  # a name from RULES, or "none" when squid refused the request before any rule
    client: str = "-"  # "agent" or "gateway" (by the port it came in on); "-" when squid did not say


def _number(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def parse_audit_line(line: str) -> AuditRecord | None:
    """Read one audit log line; ``None`` for a blank or unreadable line (a torn last write)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    texts = {key: data.get(key) for key in ("time", "session", "method", "host", "decision", "rule")}
    if not all(isinstance(value, str) for value in texts.values()):
        return None
    rule = str(texts["rule"])
    known = dict(RULES)
    # A request squid rejects before http_access (a malformed one) carries no notes: nothing allowed it.
    decision = (
        known.get(rule, "deny") if texts["decision"] not in ("allow", "deny") else str(texts["decision"])
    )
    return AuditRecord(
        time=str(texts["time"]),
        session=str(texts["session"]),
        method=str(texts["method"]),
        host=str(texts["host"]),
        port=_number(data.get("port")),
        status=_number(data.get("status")),
        bytes_up=_number(data.get("bytes_up")) or 0,
        bytes_down=_number(data.get("bytes_down")) or 0,
        decision=decision,
        rule=rule if rule in known else "none",
        client=next((client for client in CLIENTS if data.get("client") == client), "-"),
    )


def summarize_denials(records: Iterable[AuditRecord]) -> str | None:
    """One line for the user about what the proxy blocked, with the flag that would allow it."""
    denied = [record for record in records if record.decision == "deny"]
    if not denied:
        return None
    hosts = Counter(record.host for record in denied)
    total = sum(hosts.values())
    names = sorted(hosts)
    requests = "request" if total == 1 else "requests"
    domains = "domain" if len(names) == 1 else "domains"
    # Only a name refused for not being on the list can be fixed by allowing it: a deny-list
    # entry wins over any allow, and an IP literal, a port or a private address stays refused.
    fixable = sorted({record.host for record in denied if record.rule == "deny-not-allowed"} - {"-"})
    flags = " ".join(f"--allow-domain {name}" for name in fixable)
    advice = f"; allow with {flags}" if flags else ""
    gateway_only = sorted({record.host for record in denied if record.rule == "deny-gateway-only"})
    if gateway_only:
        advice += f"; {', '.join(gateway_only)} only through the model gateway (its base URL in the agent)"
    return f"blocked {total} {requests} to {len(names)} {domains}: {', '.join(names)}{advice}"
