"""The Engine API runtime and `containai doctor`, against Docker and against Podman's compatible socket.

The same test bodies run on each engine through the parametrized ``engine`` fixture.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from containai.images.bootstrap import BOOTSTRAP_TAG
from containai.runtime.base import BuildEvent, BuildSpec, ExecSpec
from containai.runtime.engine import EngineRuntime

from .conftest import LABELS, RUN_ID, Engine, containai
from .fakenet import ULIMITS

pytestmark = pytest.mark.engine


@pytest.fixture(scope="session")
def rootfs_tar(docker_client: Any, built_images: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Debian root filesystem as a tarball, exported from the base ContainAI bootstraps from."""
    source = BOOTSTRAP_TAG if _has(docker_client, BOOTSTRAP_TAG) else "debian:bookworm-slim"
    container = docker_client.containers.create(source, ["true"], labels=LABELS)
    try:
        target = tmp_path_factory.mktemp("rootfs") / "rootfs.tar"
        with target.open("wb") as handle:
            for chunk in container.export():
                handle.write(chunk)
        return target
    finally:
        container.remove(force=True)


def _has(client: Any, ref: str) -> bool:
    try:
        client.images.get(ref)
    except Exception:
        return False
    return True


@pytest.fixture()
def imported(engine: Engine, runtime: EngineRuntime, rootfs_tar: Path) -> Iterator[str]:
    client = engine.client
    tag = f"containai-test-rootfs:{RUN_ID}"
    runtime.import_rootfs(rootfs_tar, tag=tag, labels=LABELS, changes=['CMD ["bash"]'])
    yield tag
    for ref in (tag, f"containai-test-built:{RUN_ID}"):
        if _has(client, ref):
            client.images.remove(ref, force=True)


def test_info_reports_the_engine(engine: Engine, runtime: EngineRuntime) -> None:
    client = engine.client
    info = runtime.info()
    raw = client.version()
    assert info.version == raw["Version"]
    assert info.api_version == raw["ApiVersion"]
    assert info.kind == runtime.choice.requested
    assert any("seccomp" in option for option in info.security_options)


def test_import_then_run_with_limits(engine: Engine, runtime: EngineRuntime, imported: str) -> None:
    client = engine.client
    image = runtime.image(imported)
    assert image is not None
    assert image.labels["ai.containai.test"] == RUN_ID
    container = client.containers.run(
        imported,
        ["cat", "/etc/debian_version"],
        detach=True,
        labels=LABELS,
        ulimits=ULIMITS,
        network_mode="none",
    )
    try:
        assert container.wait(timeout=120)["StatusCode"] == 0
        assert container.logs().decode().startswith("12.")
    finally:
        container.remove(force=True)


def test_build_streams_progress_and_reuses_the_cache(
    engine: Engine, runtime: EngineRuntime, imported: str, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {imported}\nRUN echo built > /built\n")
    tag = f"containai-test-built:{RUN_ID}"

    def build() -> list[BuildEvent]:
        events: list[BuildEvent] = []
        runtime.build(BuildSpec(tmp_path, tag, {}, {"ai.containai.part": "test"}), events.append)
        return events

    first = build()
    assert any(event.step for event in first)
    second = build()
    assert any(event.cached for event in second)
    image = runtime.image(tag)
    assert image is not None and image.labels["ai.containai.part"] == "test"


def test_doctor_against_each_engine(engine: Engine, runtime: EngineRuntime, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "CONTAINAI_RUNTIME": runtime.choice.requested or ""}
    result = containai("doctor", "--json", env=env, check=False)
    report = json.loads(result.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["engine"]["status"] == "ok"
    assert checks["engine"]["data"]["kind"] == runtime.choice.requested
    assert checks["engine"]["data"]["source"] == "environment CONTAINAI_RUNTIME"
    assert checks["git"]["status"] == "ok"
    cve_warned = "engine-known-issues" in checks
    version = tuple(int(p) for p in checks["engine"]["data"]["version"].split("+")[0].split(".")[:3])
    assert cve_warned == (runtime.choice.requested == "docker" and version < (23, 0, 11))
    # Images are per engine (Podman has its own store); this run built them on each.
    assert checks["images"]["status"] == "ok", checks["images"]
    assert report["ok"] is True and result.returncode == 0, result.stdout


def test_doctor_names_stale_and_missing_images(docker_client: Any, cli_env: dict[str, str]) -> None:
    """Dev images re-tagged as nightly: base, proxy, gateway and logfwd match, agents were built on another base."""
    tagged = []
    try:
        for part in ("base", "claude", "proxy", "gateway", "logfwd"):
            docker_client.images.get(f"containai-{part}:dev").tag(f"containai-{part}", "nightly")
            tagged.append(f"containai-{part}:nightly")
        result = containai("doctor", "--json", "--channel", "nightly", env=cli_env, check=False)
    finally:
        for ref in tagged:
            docker_client.images.remove(ref)
    report = json.loads(result.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["images"]["data"]["missing"] == ["copilot", "codex"]
    assert checks["images-stale"]["data"]["stale"] == ["claude"]
    assert result.returncode == 1


def test_doctor_without_an_engine_says_how_to_start_one(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "DOCKER_HOST": f"unix://{tmp_path}/absent.sock"}
    result = containai("doctor", "--json", env=env, check=False)
    report = json.loads(result.stdout)
    engine = report["checks"][0]
    assert engine["name"] == "engine" and engine["status"] == "fail"
    assert "start the engine" in engine["hint"]
    assert result.returncode == 1


def test_unreachable_engine_is_a_one_line_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "DOCKER_HOST": f"unix://{tmp_path}/absent.sock"}
    result = containai("images", "build", "--agents", "proxy", env=env, check=False)
    assert result.returncode == 125
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: cannot reach the container engine")
    assert lines[1].startswith("hint: ")


def test_exec_with_input_hands_data_on_stdin_then_eof(
    engine: Engine, runtime: EngineRuntime, imported: str
) -> None:
    """How the launcher hands capabilities to the MCP stub: on stdin, never in argv or the environment."""
    client = engine.client
    container = client.containers.run(
        imported, ["sleep", "120"], detach=True, labels=LABELS, ulimits=ULIMITS, network_mode="none"
    )
    try:
        payload = bytes(range(256)) * 400  # binary, and larger than one socket buffer
        chunks: list[bytes] = []
        script = "cat > /tmp/got; wc -c < /tmp/got; sha256sum < /tmp/got; echo done >&2; exit 7"
        code = runtime.exec(
            container.id,
            ExecSpec(("sh", "-c", script), user="1000:1000", stdin=payload),
            lambda _stream, chunk: chunks.append(chunk),
        )
        output = b"".join(chunks)
        assert code == 7  # EOF reached cat: it finished, and the exit code came back
        # stdout and stderr come merged, in whichever order the engine read them.
        words = output.decode().split()
        assert str(len(payload)) in words
        assert hashlib.sha256(payload).hexdigest() in words
        assert "done" in words
    finally:
        container.remove(force=True)
