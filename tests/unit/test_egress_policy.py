"""The egress policy (names, presets, precedence) and the squid.conf it renders, without an engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from containai.egress.policy import (
    PRESETS,
    EgressPolicy,
    parse_domain,
    parse_network_config,
    resolve_policy,
)
from containai.egress.squid import (
    DEFAULT_PRIVATE_RANGES,
    RULES,
    AuditRecord,
    parse_audit_line,
    render_audit_logformat,
    render_squid_conf,
    summarize_denials,
)
from containai.errors import ConfigError, UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("allowed.test", "allowed.test"),
        ("allowed.test.", "allowed.test"),
        ("ALLOWED.TEST", "allowed.test"),
        ("ALLOWED.TEST.", "allowed.test"),
        ("*.example.com", ".example.com"),
        (".example.com", ".example.com"),
        ("*.Example.COM.", ".example.com"),
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("MÜNCHEN.DE", "xn--mnchen-3ya.de"),
        ("*.münchen.de", ".xn--mnchen-3ya.de"),
        ("xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),
        ("api.github.com", "api.github.com"),
        ("a-b.c-d.example", "a-b.c-d.example"),
        ("123.example.com", "123.example.com"),
        ("0x10.example.com", "0x10.example.com"),
        ("a." * 125 + "io", "a." * 125 + "io"),
    ],
)
def test_parse_domain_accepts_and_normalises(text: str, expected: str) -> None:
    assert parse_domain(text, "test") == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("ex ample.com", "white space"),
        (" example.com", "white space"),
        ("example.com\n", "white space"),
        ("1.2.3.4", "IP address"),
        ("1.2.3.4.", "IP address"),
        ("3323068436", "IP address"),
        ("0xC6.0x12.0.20", "IP address"),
        ("0306.022.0.024", "IP address"),
        ("*.1.2.3.4", "IP address"),
        ("[::1]", "IP address"),
        ("::1", "IP address"),
        ("::ffff:1.2.3.4", "IP address"),
        ("[::ffff:198.18.0.20]", "IP address"),
        ("fd00:ec2::254", "IP address"),
        ("\uff11.\uff12.\uff13.\uff14", "IP address"),  # full-width digits: an address after IDNA
        ("a@b.com", "'@'"),
        ("allowed.test@evil.test", "'@'"),
        ("evil.test#@allowed.test", "contains"),
        ("example.com/path", "'/'"),
        ("example.com:443", "':'"),
        ("http://example.com", "contains"),
        ("ex%61mple.com", "'%'"),
        ("com", "top-level"),
        (".com", "top-level"),
        ("*.com", "top-level"),
        ("com.", "top-level"),
        ("localhost", "top-level"),
        ("*", "wildcard"),
        ("*.", "wildcard"),
        (".", "empty label"),
        ("example..com", "empty label"),
        ("example.com..", "empty label"),
        ("..example.com", "empty label"),
        ("www.*.example.com", "wildcard"),
        ("*example.com", "wildcard"),
        ("**.example.com", "wildcard"),
        ("-example.com", "letters, digits"),
        ("example-.com", "letters, digits"),
        ("ex_ample.com", "letters, digits"),
        ("a" * 64 + ".com", "longer than 63"),
        ("a." * 126 + "io", "longer than 253"),
    ],
)
def test_parse_domain_refuses(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_domain(text, "config.toml [network] allow")
    assert reason in caught.value.message
    assert caught.value.message.startswith("config.toml [network] allow: ")
    assert "\n" not in caught.value.message
    assert caught.value.hint


def test_parse_domain_raises_usage_error_for_the_command_line() -> None:
    with pytest.raises(UsageError, match="--allow-domain"):
        parse_domain("1.2.3.4", "--allow-domain", error=UsageError)


def test_a_homoglyph_is_a_different_domain() -> None:
    cyrillic = parse_domain("\u0430llowed.test", "test")  # Cyrillic a
    assert cyrillic.startswith("xn--")
    assert cyrillic != "allowed.test"


def test_presets_are_valid_exact_names() -> None:
    assert set(PRESETS) == {"npm", "pypi", "github", "debian", "crates", "go"}
    for domains in PRESETS.values():
        assert all(parse_domain(name, "preset") == name for name in domains)
        assert not any(name.startswith(".") for name in domains)  # presets stay tight


def _resolve(**kwargs: Any) -> EgressPolicy:
    arguments: dict[str, Any] = {
        "session": "s1",
        "agent_endpoints": {},
        "presets": (),
        "config_allow": (),
        "config_deny": (),
        "cli_allow": (),
        "repo_requested": (),
        "repo_approved": (),
    }
    arguments.update(kwargs)
    return resolve_policy(**arguments)


def test_resolve_policy_merges_sorts_and_records_sources() -> None:
    policy = _resolve(
        agent_endpoints={"copilot": ["api.github.com", "github.com"], "claude": ["api.anthropic.com"]},
        presets=["github"],
        config_allow=["Example.org."],
        cli_allow=["*.corp.example"],
        repo_requested=["repo.example", "sneaky.example"],
        repo_approved=["REPO.EXAMPLE"],
    )
    assert policy.allow == tuple(sorted(policy.allow))
    assert len(set(policy.allow)) == len(policy.allow)
    assert ".corp.example" in policy.allow
    assert "example.org" in policy.allow
    assert "repo.example" in policy.allow
    assert "sneaky.example" not in policy.allow
    assert policy.sources["api.anthropic.com"] == "agent claude"
    assert policy.sources["api.github.com"] == "agent copilot, preset github"
    assert policy.sources["raw.githubusercontent.com"] == "preset github"
    assert policy.sources["example.org"] == "config"
    assert policy.sources[".corp.example"] == "--allow-domain"
    assert policy.sources["repo.example"] == "repo (approved)"
    assert set(policy.sources) == set(policy.allow)
    assert policy.connect_ports == (443,)
    with pytest.raises(TypeError):
        policy.sources["x"] = "y"  # type: ignore[index]


def test_repo_approval_without_request_adds_nothing() -> None:
    assert _resolve(repo_approved=["approved.example"]).allow == ()


def test_deny_wins_over_allow() -> None:
    policy = _resolve(
        presets=["github"],
        cli_allow=["evil.test", "api.evil.test", ".example.com", "www.example.net"],
        config_deny=["evil.test", ".github.com", "bad.example.com", ".example.net"],
    )
    assert "evil.test" not in policy.allow
    assert "api.evil.test" in policy.allow  # an exact deny covers no subdomain
    assert not any(name.endswith("github.com") for name in policy.allow)
    assert "www.example.net" not in policy.allow
    # A narrower deny inside a wider allow stays in both; squid checks the deny first.
    assert ".example.com" in policy.allow
    assert "bad.example.com" in policy.deny
    assert policy.sources["bad.example.com"] == "config (deny)"


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        _resolve(presets=["npm", "rubygems"])
    assert "'rubygems'" in caught.value.message
    assert caught.value.hint is not None
    for name in PRESETS:
        assert name in caught.value.hint


def test_cli_domains_raise_usage_errors_and_config_domains_config_errors() -> None:
    with pytest.raises(UsageError, match=r"^--allow-domain: '1\.2\.3\.4'"):
        _resolve(cli_allow=["1.2.3.4"])
    with pytest.raises(ConfigError, match=r"^agent claude: "):
        _resolve(agent_endpoints={"claude": ["com"]})


def test_policy_refuses_bad_ports_and_sizes() -> None:
    with pytest.raises(ConfigError):
        EgressPolicy(session="s", allow=(), connect_ports=(0,))
    with pytest.raises(ConfigError):
        EgressPolicy(session="s", allow=(), max_request_bytes=0)
    with pytest.raises(ConfigError):
        EgressPolicy(session="", allow=())
    for name in ("Example.com", "*.example.com", "x.example\nhttp_access allow all"):
        with pytest.raises(ConfigError):
            EgressPolicy(session="s", allow=(name,))


def test_parse_network_config() -> None:
    allow, deny, presets = parse_network_config(
        {"allow": ["A.example.", "*.b.example"], "deny": ["c.example"], "presets": ["npm"]}
    )
    assert allow == ("a.example", ".b.example")
    assert deny == ("c.example",)
    assert presets == ("npm",)
    assert parse_network_config({}) == ((), (), ())


@pytest.mark.parametrize(
    "data",
    [
        {"allow": "a.example"},
        {"allow": ["a.example", 3]},
        {"deny": [None]},
        {"presets": "npm"},
        {"presets": ["nope"]},
        {"allowed": ["a.example"]},
        {"allow": ["1.2.3.4"]},
    ],
)
def test_parse_network_config_is_strict(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_network_config(data)


# --- squid.conf -----------------------------------------------------------------------------------


def _policy(**kwargs: Any) -> EgressPolicy:
    return _resolve(
        **{"cli_allow": ["allowed.test", ".example.com"], "config_deny": ["bad.example.com"], **kwargs}
    )


def test_render_is_deterministic() -> None:
    one = render_squid_conf(_policy(presets=["npm", "pypi"]))
    two = render_squid_conf(_policy(presets=["pypi", "npm"]))
    assert one == two
    assert one.endswith("\n")


def _access_lines(conf: str) -> list[str]:
    return [line for line in conf.splitlines() if line.startswith("http_access ")]


def test_http_access_rules_come_in_the_safe_order() -> None:
    conf = render_squid_conf(_policy())
    rules = _access_lines(conf)
    assert rules == [
        "http_access deny note_client manager mark_deny_manager",
        "http_access deny internal_url mark_deny_internal",
        "http_access deny !connect_method !web_scheme mark_deny_scheme",
        "http_access deny connect_method !connect_ports mark_deny_connect_port",
        "http_access deny !safe_ports mark_deny_port",
        "http_access deny ip_literal mark_deny_ip_literal",
        "http_access deny !allowed_domains mark_deny_not_allowed",
        "http_access deny denied_domains mark_deny_denylist",
        "http_access deny private_dst mark_deny_private",
        "http_access allow allowed_domains mark_allow",
        "http_access deny all mark_deny_default",
    ]
    # The names are decided before the first ACL that resolves them (dst): no DNS for a refused name.
    first_dst = next(i for i, line in enumerate(rules) if "private_dst" in line)
    assert first_dst > rules.index("http_access deny !allowed_domains mark_deny_not_allowed")
    assert first_dst > rules.index("http_access deny denied_domains mark_deny_denylist")
    assert [line.split()[-1].removeprefix("mark_").replace("_", "-") for line in rules] == [
        rule for rule, _ in RULES if "gateway" not in rule
    ]
    # Every ACL definition comes before the rules that use it.
    last_acl = max(i for i, line in enumerate(conf.splitlines()) if line.startswith("acl "))
    first_rule = min(i for i, line in enumerate(conf.splitlines()) if line.startswith("http_access "))
    assert last_acl < first_rule


def test_domain_acls_never_resolve_names() -> None:
    conf = render_squid_conf(_policy())
    domain_acls = [line for line in conf.splitlines() if " dstdomain " in line or " dstdom_regex " in line]
    assert domain_acls
    assert all(" -n " in line for line in domain_acls)
    assert "acl allowed_domains dstdomain -n allowed.test" in conf
    assert "acl allowed_domains dstdomain -n .example.com" in conf
    assert "acl denied_domains dstdomain -n bad.example.com" in conf


def test_covered_names_are_collapsed_for_squid() -> None:
    conf = render_squid_conf(_resolve(presets=["github"], cli_allow=[".github.com"]))
    assert "dstdomain -n .github.com" in conf
    assert "dstdomain -n api.github.com" not in conf
    assert "dstdomain -n github.com\n" not in conf
    assert "dstdomain -n raw.githubusercontent.com" in conf


def test_empty_allow_list_denies_everything() -> None:
    conf = render_squid_conf(_resolve())
    rules = _access_lines(conf)
    assert "allowed_domains" not in conf
    assert not any(line.startswith("http_access allow") for line in rules)
    assert rules[-2:] == [
        "http_access deny all mark_deny_not_allowed",
        "http_access deny all mark_deny_default",
    ]


def test_ports() -> None:
    conf = render_squid_conf(_resolve(cli_allow=["a.example"], connect_ports=[8443, 443, 443]))
    assert "acl connect_ports port 443 8443\n" in conf
    assert "acl safe_ports port 80 443 8443\n" in conf


def test_private_ranges_default_and_override() -> None:
    conf = render_squid_conf(_policy())
    for cidr in (
        "10.0.0.0/8",
        "169.254.0.0/16",
        "198.18.0.0/15",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ):
        assert f"acl private_dst dst {cidr}\n" in conf
    # squid stores IPv4 as mapped IPv6: this range would match every IPv4 destination.
    assert "::ffff:0:0/96" not in DEFAULT_PRIVATE_RANGES
    lab = render_squid_conf(
        _policy(), private_ranges=[r for r in DEFAULT_PRIVATE_RANGES if r != "198.18.0.0/15"]
    )
    assert "198.18.0.0/15" not in lab
    none = render_squid_conf(_policy(), private_ranges=())
    assert "private_dst" not in none
    with pytest.raises(ValueError):
        render_squid_conf(_policy(), private_ranges=["10.0.0.0/33"])


def test_hardening_directives() -> None:
    conf = render_squid_conf(
        _policy(), listen="3128", dns_nameservers=["127.0.0.11"], shutdown_seconds=0, pid_file="/run/p.pid"
    )
    for line in (
        "http_port 3128 name=agent",
        "via off",
        "forwarded_for delete",
        "request_header_access X-Forwarded-For deny all",
        "httpd_suppress_version_string on",
        "strip_query_terms on",
        "cache deny all",
        f"request_body_max_size {100 * 1024 * 1024} bytes",
        f"reply_body_max_size {1024 * 1024 * 1024} bytes all",
        "shutdown_lifetime 0 seconds",
        "pid_filename /run/p.pid",
        "dns_nameservers 127.0.0.11",
        "coredump_dir /tmp",
        "cache_log stdio:/dev/stderr",
        "logfile_rotate 0",
        "access_log stdio:/var/log/containai/egress.jsonl logformat=containai_json",
    ):
        assert f"\n{line}\n" in conf, line
    assert "dns_v4_first" not in conf  # removed in squid 5: it would be a config error
    assert "dns_nameservers" not in render_squid_conf(_policy())
    assert "http_port 127.0.0.1:3128 name=agent\n" in render_squid_conf(_policy())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"listen": "3128\nhttp_access allow all"},
        {"access_log": "/tmp/x log"},
        {"pid_file": "relative.pid"},
        {"dns_nameservers": ["dns.example"]},
        {"shutdown_seconds": -1},
    ],
)
def test_render_refuses_values_that_would_inject_directives(kwargs: dict[str, Any]) -> None:
    with pytest.raises((ConfigError, ValueError)):
        render_squid_conf(_policy(), **kwargs)


TRICKY_SESSIONS = [
    "s1",
    's"}, "rule": "allow',
    "back\\slash",
    "%{rule}note %% %>a",
    "${service_name} ${process_number}",
    "# not a comment",
    "line\nhttp_access allow all",
    "tab\tcr\r\x01\x7f",
    "ünïcödé \u2028 😀",
]


@pytest.mark.parametrize("session", TRICKY_SESSIONS)
def test_session_id_is_escaped_into_one_safe_logformat_line(session: str) -> None:
    conf = render_squid_conf(_policy(session=session))
    lines = [line for line in conf.splitlines() if line.startswith("logformat ")]
    assert len(lines) == 1
    body = lines[0].split(" ", 2)[2]
    assert body.isascii() and body.isprintable()
    # What squid does to the literal text: nothing, once no %, $ or # is left in it.
    literal = body.split('"session":"', 1)[1].split('","method"', 1)[0]
    assert not set(literal) & set("%$#")
    assert json.loads(f'"{literal}"') == session
    assert "\nhttp_access allow all\n" not in conf


def _line(**fields: Any) -> str:
    base = {
        "time": "2026-01-02T03:04:05.678Z",
        "session": "s1",
        "method": "GET",
        "host": "allowed.test",
        "port": "80",
        "status": "200",
        "bytes_up": "134",
        "bytes_down": "468",
        "decision": "allow",
        "rule": "allow",
    }
    base.update(fields)
    return json.dumps(base)


def test_parse_audit_line_round_trip() -> None:
    assert parse_audit_line(_line()) == AuditRecord(
        time="2026-01-02T03:04:05.678Z",
        session="s1",
        method="GET",
        host="allowed.test",
        port=80,
        status=200,
        bytes_up=134,
        bytes_down=468,
        decision="allow",
        rule="allow",
    )
    # A real line, as squid 5.7 wrote it in the engine test.
    real = (
        '{"time":"2026-11-27T02:53:18.083Z","session":"s-\\"q\\" \\\\ \\u0025{rule}note","method":"CONNECT",'
        '"host":"evil.test","port":"443","status":"403","bytes_up":"110","bytes_down":"3412",'
        '"decision":"deny","rule":"deny-not-allowed"}'
    )
    record = parse_audit_line(real)
    assert record is not None
    assert record.session == 's-"q" \\ %{rule}note'
    assert (record.method, record.host, record.port, record.status) == ("CONNECT", "evil.test", 443, 403)
    assert (record.decision, record.rule) == ("deny", "deny-not-allowed")


def test_parse_audit_line_handles_squid_placeholders_and_garbage() -> None:
    record = parse_audit_line(_line(port="-", status="-", bytes_up="-", decision="-", rule="-"))
    assert record is not None
    assert (record.port, record.status, record.bytes_up) == (None, None, 0)
    assert (record.decision, record.rule) == ("deny", "none")  # nothing allowed it
    for bad in ("", "not json", "[]", '{"time": 1}', _line()[:-5]):
        assert parse_audit_line(bad) is None


def _record(host: str, decision: str = "deny", rule: str = "deny-not-allowed") -> AuditRecord:
    return AuditRecord("t", "s1", "GET", host, 80, 403, 1, 1, decision, rule)


def test_summarize_denials() -> None:
    assert summarize_denials([]) is None
    assert summarize_denials([_record("allowed.test", "allow", "allow")]) is None
    summary = summarize_denials(
        [_record("y.test"), _record("x.test"), _record("x.test"), _record("allowed.test", "allow", "allow")]
    )
    assert (
        summary
        == "blocked 3 requests to 2 domains: x.test, y.test; allow with --allow-domain x.test --allow-domain y.test"
    )
    assert summarize_denials([_record("x.test")]) == (
        "blocked 1 request to 1 domain: x.test; allow with --allow-domain x.test"
    )


def test_summarize_denials_only_suggests_what_would_help() -> None:
    summary = summarize_denials(
        [_record("10.0.0.1", rule="deny-ip-literal"), _record("bad.example.com", rule="deny-denylist")]
    )
    assert summary == "blocked 2 requests to 2 domains: 10.0.0.1, bad.example.com"


# -- the model API is the gateway's alone (issue 11 item 4) -----------------------------------------


def test_the_gateways_upstream_leaves_the_agents_list_whoever_put_it_there() -> None:
    policy = _resolve(
        agent_endpoints={"claude": ["api.anthropic.com", "statsig.anthropic.com"]},
        config_allow=["API.anthropic.com.", ".anthropic.com"],
        cli_allow=["api.anthropic.com"],
        repo_requested=["api.anthropic.com"],
        repo_approved=["api.anthropic.com"],
        gateway=["api.anthropic.com"],
    )
    assert "api.anthropic.com" not in policy.allow
    assert policy.gateway == ("api.anthropic.com",)
    # The wider name stays (the renderer refuses the upstream under it), and so do the others.
    assert policy.allow == (".anthropic.com", "statsig.anthropic.com")
    assert policy.sources["api.anthropic.com"] == (
        "the model gateway only (taken off the agent's list: agent claude, config, --allow-domain, "
        "repo (approved))"
    )
    assert _resolve(gateway=["api.mock.test"]).sources["api.mock.test"] == "the model gateway only"
    # Without a gateway nothing changes.
    assert _resolve(cli_allow=["api.anthropic.com"]).allow == ("api.anthropic.com",)


def test_a_deny_still_covers_the_gateways_upstream() -> None:
    policy = _resolve(config_deny=[".mock.test"], gateway=["api.mock.test"])
    assert policy.gateway == ("api.mock.test",) and policy.deny == (".mock.test",)
    assert policy.sources["api.mock.test"] == "the model gateway only"
    denied = _resolve(config_deny=["api.mock.test"], gateway=["api.mock.test"])
    assert denied.sources["api.mock.test"] == "config (deny); the model gateway only"


def test_the_gateways_upstream_must_be_one_host() -> None:
    with pytest.raises(ConfigError, match="is a domain, not one host"):
        _resolve(gateway=[".anthropic.com"])
    with pytest.raises(ConfigError, match="not a domain name"):
        _resolve(gateway=["10.0.0.1"])
    with pytest.raises(ConfigError, match="on no allow list"):
        EgressPolicy(session="s", allow=("api.mock.test",), gateway=("api.mock.test",))


def _gateway_conf(**kwargs: Any) -> str:
    policy = _resolve(gateway=["api.mock.test"], **kwargs)
    return render_squid_conf(policy, gateway_listen="127.0.0.1:3129")


def test_the_gateway_has_its_own_port_and_only_it_reaches_the_upstream() -> None:
    conf = _gateway_conf(cli_allow=["allowed.test", ".mock.test"], config_deny=["bad.mock.test"])
    lines = conf.splitlines()
    assert "http_port 127.0.0.1:3128 name=agent" in lines
    assert "http_port 127.0.0.1:3129 name=gateway" in lines
    assert "acl from_gateway myportname gateway" in lines
    assert "acl gateway_upstream dstdomain -n api.mock.test" in lines
    assert _access_lines(conf) == [
        "http_access deny note_client manager mark_deny_manager",
        "http_access deny internal_url mark_deny_internal",
        "http_access deny !connect_method !web_scheme mark_deny_scheme",
        "http_access deny connect_method !connect_ports mark_deny_connect_port",
        "http_access deny !safe_ports mark_deny_port",
        "http_access deny ip_literal mark_deny_ip_literal",
        # Before the allow list: .mock.test, allowed to the agent, must not let it reach api.mock.test.
        "http_access deny !from_gateway gateway_upstream mark_deny_gateway_only",
        "http_access deny from_gateway !gateway_upstream mark_deny_gateway_elsewhere",
        "http_access deny !from_gateway !allowed_domains mark_deny_not_allowed",
        "http_access deny denied_domains mark_deny_denylist",
        "http_access deny private_dst mark_deny_private",
        "http_access allow from_gateway mark_allow_gateway",
        "http_access allow allowed_domains mark_allow",
        "http_access deny all mark_deny_default",
    ]
    assert [line.split()[-1].removeprefix("mark_").replace("_", "-") for line in _access_lines(conf)] == [
        rule for rule, _ in RULES
    ]


def test_with_nothing_allowed_only_the_gateway_gets_past_the_names() -> None:
    conf = _gateway_conf()
    rules = _access_lines(conf)
    assert "http_access deny !from_gateway mark_deny_not_allowed" in rules
    assert rules.index("http_access deny !from_gateway mark_deny_not_allowed") < rules.index(
        "http_access allow from_gateway mark_allow_gateway"
    )
    assert "acl allowed_domains" not in conf
    assert not any(line.startswith("http_access allow allowed_domains") for line in rules)
    # The gateway's upstream resolving to a private address is still refused (DNS rebinding).
    assert rules.index("http_access deny private_dst mark_deny_private") < rules.index(
        "http_access allow from_gateway mark_allow_gateway"
    )


def test_without_a_gateway_there_is_one_port_and_every_request_is_the_agents() -> None:
    conf = render_squid_conf(_policy())
    assert "name=gateway" not in conf and "from_gateway" not in conf
    assert "acl note_client any-of client_agent" in conf.splitlines()


def test_the_audit_names_the_client() -> None:
    assert '"client":"%"{client}note"' in render_audit_logformat("s1")
    conf = _gateway_conf()
    assert "acl client_gateway annotate_transaction client=gateway" in conf
    assert "acl from_gateway_noted all-of from_gateway client_gateway" in conf
    assert "acl note_client any-of from_gateway_noted client_agent" in conf
    for client in ("agent", "gateway"):
        record = parse_audit_line(_line(client=client))
        assert record is not None and record.client == client
    for other in ("-", "root", 3):
        record = parse_audit_line(_line(client=other))
        assert record is not None and record.client == "-"
    record = parse_audit_line(_line())  # written before the field existed
    assert record is not None and record.client == "-"


def test_summarize_denials_says_the_model_api_is_the_gateways() -> None:
    summary = summarize_denials([_record("api.mock.test", rule="deny-gateway-only"), _record("x.test")])
    assert summary == (
        "blocked 2 requests to 2 domains: api.mock.test, x.test; allow with --allow-domain x.test; "
        "api.mock.test only through the model gateway (its base URL in the agent)"
    )
