"""The rendered squid.conf, checked by the real squid 5.7 in the proxy image, and run for real.

All traffic stays on an ``--internal`` network this module creates: the upstreams are containers
with the aliases ``allowed.test`` and ``evil.test``, and squid resolves them through the engine's
embedded DNS (127.0.0.11). Nothing here contacts an outside address.
"""

from __future__ import annotations

import ipaddress
import shlex
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from containai.egress.policy import EgressPolicy, resolve_policy
from containai.egress.squid import DEFAULT_PRIVATE_RANGES, AuditRecord, parse_audit_line, render_squid_conf

from .conftest import CHANNEL, LABELS, run

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("built_images")]

PROXY_IMAGE = f"containai-proxy:{CHANNEL}"
BASE_IMAGE = f"containai-base:{CHANNEL}"
LOG_DIR = "/var/log/containai"
PROXY_UID = 13  # Debian's fixed uid for the `proxy` user the image runs as

# Lines squid prints whatever the configuration says. The engine runs containers without IPv6,
# so squid notes that and ignores the IPv6 ranges (there is no IPv6 route to reach them either);
# `via off` is asked for on purpose, so the upstream does not learn it is talking to a proxy.
_EXPECTED_NOISE = (
    "WARNING: BCP 177 violation. Detected non-functional IPv6 loopback.",
    "aclIpParseIpData: IPv6 has not been enabled.",
    "WARNING: HTTP requires the use of Via",
)


def _policy(session: str = "s-test", **kwargs: Any) -> EgressPolicy:
    arguments: dict[str, Any] = {
        "agent_endpoints": {},
        "presets": (),
        "config_allow": (),
        "config_deny": (),
        "cli_allow": (),
        "repo_requested": (),
        "repo_approved": (),
    }
    arguments.update(kwargs)
    return resolve_policy(session=session, **arguments)


POLICIES = {
    "empty": _policy(),
    "a-few-domains": _policy(cli_allow=("allowed.test", ".example.com"), config_deny=("evil.example.com",)),
    "agents-and-presets": _policy(
        agent_endpoints={"claude": ("api.anthropic.com",), "copilot": ("api.github.com", "github.com")},
        presets=("npm", "pypi", "github", "debian", "crates", "go"),
        config_allow=(".github.com",),
    ),
    "connect-ports": _policy(cli_allow=("allowed.test",), connect_ports=(443, 8443, 9418)),
    "gateway": _policy(
        agent_endpoints={"claude": ("api.anthropic.com",)},
        cli_allow=(".anthropic.com",),
        config_deny=("evil.example.com",),
        gateway=("api.anthropic.com",),
    ),
    "gateway-alone": _policy(gateway=("api.mock.test",)),
    "tricky-session": _policy(
        session='s"}\\ %{rule}note ${service_name} #x \n\t\x01 ü \u2028', cli_allow=("allowed.test",)
    ),
}


def _parse(docker_client: Any, conf: str, tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "squid.conf"
    path.write_text(conf, encoding="utf-8")
    path.chmod(0o644)
    return run(
        docker_client,
        PROXY_IMAGE,
        ["squid", "-k", "parse", "-f", "/etc/containai/squid.conf"],
        entrypoint=[],
        volumes={str(path): {"bind": "/etc/containai/squid.conf", "mode": "ro"}},
        network_mode="none",
    )


def _complaints(output: str) -> list[str]:
    """Every line squid printed that is not the echo of a directive or known start-up chatter.

    An allow list, not a search for ERROR: squid 5.7's ``-k parse`` exits 0 and prints a bad
    ``http_access`` line as ``aclParseAccessLine: ...`` with no ERROR or WARNING in it.
    """
    return [
        line
        for line in output.splitlines()
        if line.strip()
        and not any(
            f"| {ok}" in line
            for ok in (
                "Startup: ",
                "Processing: ",
                "Processing Configuration File: ",
                "Initializing https:// proxy context",
            )
        )
        and not any(noise in line for noise in _EXPECTED_NOISE)
    ]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_real_squid_parses_the_rendered_conf(docker_client: Any, tmp_path: Path, name: str) -> None:
    code, output = _parse(docker_client, render_squid_conf(POLICIES[name]), tmp_path)
    assert code == 0, output
    assert not _complaints(output), output


@pytest.mark.parametrize(
    "broken", ["http_access bogus", "acl x dstdomain -n", "dns_v4_first on", "logformat x %{x}bogus"]
)
def test_the_parse_check_catches_a_broken_conf(docker_client: Any, tmp_path: Path, broken: str) -> None:
    """squid -k parse exits 0 for some mistakes, so the check above must read the output."""
    code, output = _parse(docker_client, render_squid_conf(POLICIES["empty"]) + broken + "\n", tmp_path)
    assert code != 0 or _complaints(output), output


# --- the proxy running for real on a private network ---------------------------------------------


@pytest.fixture()
def network(docker_client: Any) -> Iterator[Any]:
    net = docker_client.networks.create(
        f"containai-test-egress-{uuid.uuid4().hex[:8]}", driver="bridge", internal=True, labels=LABELS
    )
    try:
        yield net
    finally:
        for container in docker_client.containers.list(all=True, filters={"network": net.id}):
            container.remove(force=True)
        net.remove()


def _start(
    docker_client: Any, network: Any, image: str, command: Sequence[str], alias: str, **kwargs: Any
) -> Any:
    return docker_client.containers.run(
        image,
        list(command),
        detach=True,
        labels=LABELS,
        network=network.name,
        networking_config={network.name: docker_client.api.create_endpoint_config(aliases=[alias])},
        **kwargs,
    )


def _wait_for(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _ranges_without(subnet: str) -> tuple[str, ...]:
    """The default private ranges with only the test network's own subnet carved out."""
    own = ipaddress.ip_network(subnet)
    ranges: list[str] = []
    for cidr in DEFAULT_PRIVATE_RANGES:
        block = ipaddress.ip_network(cidr)
        if block.version == own.version and block.supernet_of(own):  # type: ignore[arg-type]
            ranges += [str(part) for part in sorted(block.address_exclude(own))]  # type: ignore[arg-type]
        else:
            ranges.append(cidr)
    return tuple(ranges)


# (curl arguments, the proxy's answer, the rule and host the audit log must name), in this order.
# squid logs the host normalised: numeric encodings as a dotted quad, upper case and a trailing dot removed.
# A CONNECT refusal shows in %{http_connect}; a plain request's in %{http_code}.
REQUESTS: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (("http://allowed.test/?secret=1",), "200", "allow", "allowed.test"),
    (("http://evil.test/",), "403", "deny-not-allowed", "evil.test"),
    (("http://{allowed_ip}/",), "403", "deny-ip-literal", "{allowed_ip}"),
    (("http://3323068436/",), "403", "deny-ip-literal", "198.18.0.20"),
    (("http://[::1]/",), "403", "deny-ip-literal", "[::1]"),
    (("http://loopback.test/",), "403", "deny-private", "loopback.test"),
    (("-p", "https://allowed.test:22/"), "403", "deny-connect-port", "allowed.test"),
    (("-p", "https://evil.test/"), "403", "deny-not-allowed", "evil.test"),
    (("http://allowed.test:8080/",), "403", "deny-port", "allowed.test"),
    (("ftp://allowed.test/",), "403", "deny-scheme", "allowed.test"),
    (("http://proxy:3128/squid-internal-mgr/info",), "403", "deny-manager", "proxy"),
    # Sent as written (curl would normalise these hosts before the proxy saw them).
    (("raw", "GET", "http://3323068436/"), "403", "deny-ip-literal", "198.18.0.20"),
    (("raw", "GET", "http://0xC6.0x12.0.20/"), "403", "deny-ip-literal", "198.18.0.20"),
    (("raw", "CONNECT", "[::ffff:198.18.0.20]:443"), "403", "deny-ip-literal", "198.18.0.20"),
    (("raw", "GET", "http://ALLOWED.TEST./"), "200", "allow", "allowed.test"),
    (("raw", "GET", "http://allowed.test.evil.test/"), "403", "deny-not-allowed", "allowed.test.evil.test"),
    (("raw", "GET", "http://allowed.test@evil.test/"), "403", "deny-not-allowed", "evil.test"),
)


def _curl_all(docker_client: Any, network: Any, requests: Sequence[Sequence[str]]) -> list[str]:
    """Send each request through the proxy from one client container; one status per line."""

    def command(args: Sequence[str]) -> str:
        if args[0] == "raw":
            request = f"{args[1]} {args[2]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            return (
                f"exec 3<>/dev/tcp/proxy/3128; printf %s {shlex.quote(request)} >&3;"
                " head -1 <&3 | cut -d' ' -f2; exec 3<&-; "
            )
        quoted = " ".join(shlex.quote(arg) for arg in args)
        return f"curl -s -o /dev/null --max-time 20 -x http://proxy:3128 -w '%{{http_code}} %{{http_connect}}\\n' {quoted}; "

    script = "".join(command(args) for args in requests)
    _, output = run(
        docker_client, BASE_IMAGE, ["bash", "-c", script], network=network.name
    )  # curl fails on a refused CONNECT
    return [max(line.split(), key=lambda status: status != "000") for line in output.splitlines()]


def test_proxy_allows_the_list_denies_the_rest_and_audits_each_request_once(
    docker_client: Any, network: Any, tmp_path: Path
) -> None:
    # Every character squid's config reader or logformat gives meaning to, and some JSON must escape.
    session = 's-"q" \\ %{rule}note ${service_name} #c \n\tü\u2028'
    upstream_sysctls = {"net.ipv4.ip_unprivileged_port_start": "0"}  # port 80 as the image's non-root user
    serve = ["python3", "-m", "http.server", "80"]
    allowed = _start(docker_client, network, BASE_IMAGE, serve, "allowed.test", sysctls=upstream_sysctls)
    evil = _start(docker_client, network, BASE_IMAGE, serve, "evil.test", sysctls=upstream_sysctls)

    subnet = docker_client.networks.get(network.id).attrs["IPAM"]["Config"][0]["Subnet"]
    policy = _policy(session=session, cli_allow=("allowed.test", "loopback.test"))
    conf = render_squid_conf(
        policy, listen="3128", dns_nameservers=("127.0.0.11",), private_ranges=_ranges_without(subnet)
    )
    conf_path = tmp_path / "squid.conf"
    conf_path.write_text(conf, encoding="utf-8")
    conf_path.chmod(0o644)
    proxy = _start(
        docker_client,
        network,
        PROXY_IMAGE,
        ["squid", "-N", "-f", "/etc/containai/squid.conf"],
        "proxy",
        entrypoint=[],
        volumes={str(conf_path): {"bind": "/etc/containai/squid.conf", "mode": "ro"}},
        tmpfs={LOG_DIR: f"uid={PROXY_UID},gid={PROXY_UID},mode=0700"},
        # An allowed name whose address is loopback: the DNS-rebinding case the dst rule stops.
        extra_hosts={"loopback.test": "127.0.0.1"},
    )
    _wait_for(lambda: b"Accepting HTTP Socket connections" in proxy.logs(), "squid to listen")
    allowed.reload()
    allowed_ip = allowed.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
    probe = ["curl", "-s", "-o", "/dev/null", "--max-time", "2", f"http://{allowed_ip}/"]
    _wait_for(lambda: run(docker_client, BASE_IMAGE, probe, network=network.name)[0] == 0, "the upstream")

    requests = [[arg.format(allowed_ip=allowed_ip) for arg in args] for args, _, _, _ in REQUESTS]
    assert _curl_all(docker_client, network, requests) == [status for _, status, _, _ in REQUESTS]

    def records() -> list[AuditRecord]:
        code, output = proxy.exec_run(["cat", f"{LOG_DIR}/egress.jsonl"])
        assert code == 0, output
        lines = output.decode("utf-8").splitlines()
        print("\n".join(lines))  # shown by pytest when an assertion below fails
        parsed = [parse_audit_line(line) for line in lines]
        assert None not in parsed, lines
        return [record for record in parsed if record is not None]

    audit: list[AuditRecord] = _wait_for(
        lambda: len(found := records()) >= len(REQUESTS) and found, "the audit records"
    )
    # Exactly one record per request, in order, each naming the rule that decided it.
    assert [(r.decision, r.rule, str(r.status), r.host) for r in audit] == [
        ("allow" if rule == "allow" else "deny", rule, status, host.format(allowed_ip=allowed_ip))
        for _, status, rule, host in REQUESTS
    ]
    assert {r.session for r in audit} == {session}
    ok, denied = audit[0], audit[1]
    assert (ok.method, ok.port) == ("GET", 80)
    assert ok.bytes_up > 0 and ok.bytes_down > 0
    assert ok.time.endswith("Z") and "T" in ok.time
    assert (denied.method, denied.port, denied.host) == ("GET", 80, "evil.test")
    assert audit[6].method == "CONNECT" and audit[6].port == 22
    # Refused requests never reached an upstream: only the allowed ones did.
    assert evil.logs().count(b"GET /") == 0
    # the readiness probe and the two allowed requests
    assert allowed.logs().count(b"GET /") == 1 + sum(rule == "allow" for _, _, rule, _ in REQUESTS)


# (the port the request comes in on, method, target, the proxy's answer, the rule, the client)
GATEWAY_REQUESTS: tuple[tuple[int, str, str, str, str, str], ...] = (
    # The agent: the model API is refused, even as the user's wider .model.test allows its domain.
    (3128, "GET", "http://api.model.test/", "403", "deny-gateway-only", "agent"),
    (3128, "CONNECT", "api.model.test:443", "403", "deny-gateway-only", "agent"),
    (3128, "GET", "http://API.Model.TEST./", "403", "deny-gateway-only", "agent"),
    (3128, "GET", "http://allowed.test/", "200", "allow", "agent"),
    (3128, "GET", "http://other.model.test/", "200", "allow", "agent"),
    # The gateway: its upstream only.
    (3129, "GET", "http://api.model.test/", "200", "allow-gateway", "gateway"),
    (3129, "GET", "http://allowed.test/", "403", "deny-gateway-elsewhere", "gateway"),
    (3129, "CONNECT", "evil.test:443", "403", "deny-gateway-elsewhere", "gateway"),
)


def test_only_the_gateways_port_reaches_the_model_api_and_the_audit_names_the_client(
    docker_client: Any, network: Any, tmp_path: Path
) -> None:
    upstream_sysctls = {"net.ipv4.ip_unprivileged_port_start": "0"}
    serve = ["python3", "-m", "http.server", "80"]
    model = _start(docker_client, network, BASE_IMAGE, serve, "api.model.test", sysctls=upstream_sysctls)
    _start(docker_client, network, BASE_IMAGE, serve, "allowed.test", sysctls=upstream_sysctls)
    other = _start(docker_client, network, BASE_IMAGE, serve, "other.model.test", sysctls=upstream_sysctls)
    subnet = docker_client.networks.get(network.id).attrs["IPAM"]["Config"][0]["Subnet"]
    policy = _policy(cli_allow=("allowed.test", ".model.test", "api.model.test"), gateway=("api.model.test",))
    assert "api.model.test" not in policy.allow
    conf = render_squid_conf(
        policy,
        listen="3128",
        gateway_listen="3129",
        dns_nameservers=("127.0.0.11",),
        private_ranges=_ranges_without(subnet),
    )
    conf_path = tmp_path / "squid.conf"
    conf_path.write_text(conf, encoding="utf-8")
    conf_path.chmod(0o644)
    proxy = _start(
        docker_client,
        network,
        PROXY_IMAGE,
        ["squid", "-N", "-f", "/etc/containai/squid.conf"],
        "proxy",
        entrypoint=[],
        volumes={str(conf_path): {"bind": "/etc/containai/squid.conf", "mode": "ro"}},
        tmpfs={LOG_DIR: f"uid={PROXY_UID},gid={PROXY_UID},mode=0700"},
    )
    _wait_for(lambda: proxy.logs().count(b"Accepting HTTP Socket connections") >= 2, "squid's two ports")
    for upstream in (model, other):
        upstream.reload()
        ip = upstream.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        probe = ["curl", "-s", "-o", "/dev/null", "--max-time", "2", f"http://{ip}/"]
        _wait_for(
            lambda p=probe: run(docker_client, BASE_IMAGE, p, network=network.name)[0] == 0, "an upstream"
        )

    end = "HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    script = "".join(
        f"exec 3<>/dev/tcp/proxy/{port}; printf %s {shlex.quote(f'{method} {target} {end}')} >&3; "
        "head -1 <&3 | cut -d' ' -f2; exec 3<&-; "
        for port, method, target, _, _, _ in GATEWAY_REQUESTS
    )
    _, output = run(docker_client, BASE_IMAGE, ["bash", "-c", script], network=network.name)
    assert output.split() == [status for _, _, _, status, _, _ in GATEWAY_REQUESTS], output

    def records() -> list[AuditRecord]:
        code, out = proxy.exec_run(["cat", f"{LOG_DIR}/egress.jsonl"])
        assert code == 0, out
        lines = out.decode("utf-8").splitlines()
        print("\n".join(lines))  # shown by pytest when an assertion below fails
        return [record for record in map(parse_audit_line, lines) if record is not None]

    audit: list[AuditRecord] = _wait_for(
        lambda: len(found := records()) >= len(GATEWAY_REQUESTS) and found, "the audit records"
    )
    assert [(r.rule, r.client, r.host) for r in audit] == [
        (rule, client, target.split("/")[2].lower().rstrip(".") if "/" in target else target.split(":")[0])
        for _, _, target, _, rule, client in GATEWAY_REQUESTS
    ]
    # The model API saw the gateway's request only (and the readiness probe).
    assert model.logs().count(b"GET /") == 2
