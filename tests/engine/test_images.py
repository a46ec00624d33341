"""The images, built for real and run for real."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from containai.images.bootstrap import BOOTSTRAP_TAG, pick_mirror, read_host_sources
from containai.images.build import FROM_LABEL, HASH_LABEL, SLIM_IMAGE
from containai.images.catalog import PARTS, load_pins

from .conftest import CHANNEL, LABELS, ca_bundle, containai, run

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("built_images")]


@pytest.mark.parametrize("agent", ["claude", "codex", "copilot"])
def test_agent_image_runs_its_pinned_cli(docker_client: Any, agent: str) -> None:
    pin = load_pins().agents[agent]
    code, output = run(docker_client, f"containai-{agent}:{CHANNEL}", [pin.command, "--version"])
    assert code == 0, output
    assert pin.version in output


def test_every_part_is_tagged_for_the_channel(docker_client: Any) -> None:
    for part in PARTS:
        image = docker_client.images.get(f"containai-{part}:{CHANNEL}")
        assert image.labels["ai.containai.part"] == part
        assert image.labels["ai.containai.channel"] == CHANNEL
        assert re.fullmatch(r"[0-9a-f]{64}", image.labels[HASH_LABEL])


def test_base_image_has_the_session_tools_and_a_non_root_user(docker_client: Any) -> None:
    script = (
        "set -e; id -u; id -un; git --version; tmux -V; bash --version | head -1; python3 --version;"
        " node --version; npm --version; curl --version | head -1; test -x /usr/local/bin/containai-entrypoint"
    )
    code, output = run(docker_client, f"containai-base:{CHANNEL}", ["bash", "-c", script])
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0:2] == ["1000", "agent"]
    assert f"v{load_pins().node_version}" in output
    for tool in ("git version", "tmux", "GNU bash", "Python 3", "curl"):
        assert tool in output


def test_entrypoint_passes_only_allow_listed_environment(docker_client: Any) -> None:
    """A variable the engine was given is not in the command's environment, nor in PID 1's."""
    code, output = run(
        docker_client,
        f"containai-base:{CHANNEL}",
        ["bash", "-c", "env; echo ---; tr '\\0' '\\n' < /proc/1/environ"],
        environment={"CANARY_TOKEN": "canary-9c1e", "TERM": "xterm", "CONTAINAI_SESSION": "s1"},
        user="root",
    )
    assert code == 0, output
    assert "canary-9c1e" not in output
    assert "TERM=xterm" in output
    assert "CONTAINAI_SESSION=s1" in output
    # Control: without the entrypoint the same check sees the canary, so the test can fail.
    code, output = run(
        docker_client,
        f"containai-base:{CHANNEL}",
        ["bash", "-c", "tr '\\0' '\\n' < /proc/1/environ"],
        environment={"CANARY_TOKEN": "canary-9c1e"},
        entrypoint=[],
    )
    assert "canary-9c1e" in output


def test_entrypoint_started_as_root_runs_the_command_as_the_agent(docker_client: Any) -> None:
    code, output = run(
        docker_client,
        f"containai-base:{CHANNEL}",
        ["bash", "-c", "id -u; id -G; grep -E '^(Uid|Gid)' /proc/self/status"],
        user="root",
    )
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "1000"
    assert lines[1] == "1000"  # supplementary groups dropped
    assert all(set(line.split()[1:]) == {"1000"} for line in lines[2:4])


def test_extra_ca_is_trusted_in_the_images(docker_client: Any) -> None:
    ca = ca_bundle()
    if ca is None:
        pytest.skip("no CA bundle on this host")
    data = ca.read_bytes()
    first = re.search(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)
    assert first is not None
    needle = first.group(0).decode().splitlines()[1]  # a line of the certificate's base64
    for part in ("base", "claude", "proxy"):
        image = docker_client.images.get(f"containai-{part}:{CHANNEL}")
        assert image.labels["ai.containai.extra-ca-sha256"] == hashlib.sha256(data).hexdigest()
        code, output = run(
            docker_client,
            f"containai-{part}:{CHANNEL}",
            ["grep", "-c", "-F", needle, "/etc/ssl/certs/ca-certificates.crt"],
            entrypoint=[],
        )
        assert code == 0 and int(output.strip()) >= 1, output


def test_base_comes_from_slim_or_a_local_debootstrap(docker_client: Any) -> None:
    base = docker_client.images.get(f"containai-base:{CHANNEL}")
    source = base.labels[FROM_LABEL]
    assert source in (SLIM_IMAGE, BOOTSTRAP_TAG)
    if source == BOOTSTRAP_TAG:
        debian = docker_client.images.get(BOOTSTRAP_TAG)
        assert debian.labels["ai.containai.bootstrap-mirror"] == pick_mirror(read_host_sources())
        code, output = run(docker_client, BOOTSTRAP_TAG, ["cat", "/etc/debian_version"])
        assert code == 0 and output.startswith("12."), output


def test_unchanged_rebuild_comes_from_the_cache(docker_client: Any, cli_env: dict[str, str]) -> None:
    before = {part: docker_client.images.get(f"containai-{part}:{CHANNEL}").id for part in PARTS}
    result = containai("images", "build", "--agents", "all", "--channel", CHANNEL, env=cli_env)
    for part in PARTS:
        assert f"containai-{part}:{CHANNEL} unchanged, from cache" in result.stderr
        assert docker_client.images.get(f"containai-{part}:{CHANNEL}").id == before[part]


def test_build_of_one_agent_builds_only_it_and_its_base(cli_env: dict[str, str]) -> None:
    result = containai("images", "build", "--agents", "codex", "--channel", CHANNEL, env=cli_env)
    built = [line.split()[0] for line in result.stdout.splitlines()]
    assert built == [f"containai-base:{CHANNEL}", f"containai-codex:{CHANNEL}"]


def test_proxy_image_denies_everything_by_default(docker_client: Any) -> None:
    """The built-in squid.conf parses, and a proxy started with it lets no request out."""
    code, output = run(docker_client, f"containai-proxy:{CHANNEL}", ["squid", "-k", "parse"], entrypoint=[])
    assert code == 0, output
    network = docker_client.networks.create(
        f"containai-test-{LABELS['ai.containai.test']}", labels=LABELS, internal=True
    )
    proxy = docker_client.containers.run(
        f"containai-proxy:{CHANNEL}",
        detach=True,
        labels=LABELS,
        network=network.name,
        name=f"proxy-{network.name}",
    )
    try:
        code, output = run(
            docker_client,
            f"containai-base:{CHANNEL}",
            [
                "bash",
                "-c",
                f"for i in $(seq 50); do curl -s -o /dev/null -w '%{{http_code}}' -x http://{proxy.name}:3128 "
                "http://upstream.test/ && exit 0; sleep 0.2; done; exit 1",
            ],
            network=network.name,
        )
        assert code == 0, output
        assert output.strip().endswith("403")
    finally:
        proxy.remove(force=True)
        network.remove()


@pytest.mark.parametrize(
    ("part", "program", "args", "user"),
    [
        ("base", "mcp-stub", "--help", "agent"),
        ("base", "containai-entrypoint", "true", "agent"),
        ("gateway", "containai-gateway", "--help", "gateway"),
        ("logfwd", "containai-logfwd", "--help", "logfwd"),
    ],
)
def test_each_program_runs_from_its_launcher_as_the_images_user(
    docker_client: Any, part: str, program: str, args: str, user: str
) -> None:
    """The launchers the build installs run containai.inside modules under `python3 -I`, as the role's user."""
    script = (
        f"set -e; id -un; head -1 /usr/local/bin/{program}; /usr/local/bin/{program} {args} >/dev/null;"
        " test ! -w /usr/local/lib/containai/containai/inside;"
        " ls /usr/local/lib/containai/containai/inside/__pycache__ | grep -c cpython"
    )
    code, output = run(docker_client, f"containai-{part}:{CHANNEL}", ["sh", "-c", script], entrypoint=[])
    lines = output.splitlines()
    assert code == 0 and lines[:2] == [user, "#!/usr/bin/python3 -I"], output
    assert int(lines[-1]) >= 3  # compiled at build time: no run writes bytecode


def test_the_gateway_image_trusts_the_system_store(docker_client: Any) -> None:
    """It verifies the model API's certificate itself (through the proxy's CONNECT), so it needs CAs."""
    check = "import ssl; print(ssl.create_default_context().cert_store_stats()['x509_ca'])"
    code, output = run(docker_client, f"containai-gateway:{CHANNEL}", ["python3", "-c", check], entrypoint=[])
    assert code == 0 and int(output.strip()) > 0, output


def test_log_forwarder_ships_lines_as_json(docker_client: Any) -> None:
    volume = docker_client.volumes.create(labels=LABELS)
    mount = {volume.name: {"bind": "/logs", "mode": "rw"}}
    code, output = run(
        docker_client,
        f"containai-base:{CHANNEL}",
        ["bash", "-c", "mkdir -p /logs/in /logs/out && chmod 0777 /logs/in /logs/out"],
        volumes=mount,
        user="root",
        entrypoint=[],
    )
    assert code == 0, output
    forwarder = docker_client.containers.run(
        f"containai-logfwd:{CHANNEL}",
        ["--dest", "/logs/out", "proxy=/logs/in/access.log"],
        detach=True,
        labels=LABELS,
        volumes=mount,
        network_mode="none",
    )
    try:
        code, output = run(
            docker_client,
            f"containai-base:{CHANNEL}",
            ["bash", "-c", "printf 'first line\\nsecond \"quoted\" line\\n' >> /logs/in/access.log"],
            volumes=mount,
        )
        assert code == 0, output
        records: list[dict[str, str]] = []
        for _ in range(50):
            code, output = run(
                docker_client,
                f"containai-base:{CHANNEL}",
                ["bash", "-c", "cat /logs/out/proxy.jsonl 2>/dev/null || true"],
                volumes=mount,
            )
            records = [json.loads(line) for line in output.splitlines() if line.strip()]
            if len(records) >= 2:
                break
            time.sleep(0.2)
        assert [r["line"] for r in records] == ["first line", 'second "quoted" line']
        assert {r["source"] for r in records} == {"proxy"}
        forwarder.stop(timeout=10)
        assert forwarder.wait(timeout=30)["StatusCode"] == 0
    finally:
        forwarder.remove(force=True)
        volume.remove(force=True)


def test_build_dev_script_wraps_the_build(cli_env: dict[str, str]) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "build" / "build-dev.sh"
    result = subprocess.run(
        [str(script), "--agents", "proxy"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == [f"containai-proxy:{CHANNEL}"]
