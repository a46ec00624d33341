"""Fixtures for tests against the real engine(s).

Everything a test creates carries the label ``ai.containai.test=<run id>``; the session finalizer
removes every container, network and volume with that label, on Docker and on Podman.
In CI (CI=true) a missing engine fails the run instead of skipping.

A test that asks for ``engine`` (or ``env``, or ``fake_internet``, which use it) runs once on each
engine, from one body: ``engine.client`` is a Docker-SDK client on that engine's socket, and
``engine.env`` runs the CLI with that engine chosen (CONTAINAI_RUNTIME). The images are built on each
engine once per run (Podman has its own image store).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from containai.config import Paths
from containai.runtime.engine import EngineRuntime
from containai.runtime.select import EngineChoice, EngineKind

from .fakenet import ULIMITS

RUN_ID = uuid.uuid4().hex[:12]
TEST_LABEL = "ai.containai.test"
LABELS = {TEST_LABEL: RUN_ID}
# Sessions the tests start carry this user label (CONTAINAI_LABELS); their teardown and gc are scoped
# to it, so that a developer's own sessions on the same engine are never touched.
SESSION_SCOPE = f"containai-test.run={RUN_ID}"
# Repositories owned by another user than the tests' live here, reachable by that user; removed at the end.
USER_REPOS = Path(tempfile.gettempdir()) / f"containai-test-repos-{RUN_ID}"


@pytest.fixture(scope="session", autouse=True)
def user_repos() -> Iterator[Path]:
    USER_REPOS.mkdir(mode=0o711)
    USER_REPOS.chmod(0o711)
    yield USER_REPOS
    shutil.rmtree(USER_REPOS, ignore_errors=True)


DOCKER_SOCK = Path("/var/run/docker.sock")
PODMAN_SOCK = Path("/run/podman/podman.sock")
SOCKETS: dict[EngineKind, Path] = {"docker": DOCKER_SOCK, "podman": PODMAN_SOCK}
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
REPO = Path(__file__).resolve().parents[2]
# Another channel keeps a worktree whose images differ (CONTAINAI_TEST_CHANNEL=prod) off the shared dev tags.
CHANNEL = os.environ.get("CONTAINAI_TEST_CHANNEL", "dev")
BIN = Path(sys.executable).parent


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI must provide it: .ci/run starts the engines)")
    pytest.skip(what)


def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        client = docker.DockerClient(base_url=f"unix://{sock}", version="auto", timeout=10)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def ca_bundle() -> Path | None:
    """The extra CA the images are built with: the one the developer set, else the host's bundle."""
    if env := os.environ.get("CONTAINAI_EXTRA_CA_CERT"):
        return Path(env)
    return HOST_CA if HOST_CA.is_file() else None


def _cleanup(client: Any) -> None:
    for selector in ({"label": f"{TEST_LABEL}={RUN_ID}"}, {"label": SESSION_SCOPE}):
        for container in client.containers.list(all=True, filters=selector):
            container.remove(force=True, v=True)
        for network in client.networks.list(filters=selector):
            network.remove()
        for volume in client.volumes.list(filters=selector):
            volume.remove(force=True)
    for image in client.images.list(filters={"label": f"{TEST_LABEL}={RUN_ID}"}):
        client.images.remove(image.id, force=True)


def _engine_client(sock: Path, missing: str) -> Iterator[Any]:
    """A client for the engine at ``sock``; everything labelled for this run is removed afterwards."""
    if not _answers(sock):
        _missing(missing)
    client = docker.DockerClient(base_url=f"unix://{sock}", version="auto", timeout=600)
    yield client
    _cleanup(client)
    client.close()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    yield from _engine_client(DOCKER_SOCK, f"no Docker engine answers on {DOCKER_SOCK}")


@pytest.fixture(scope="session")
def podman_client() -> Iterator[Any]:
    yield from _engine_client(
        PODMAN_SOCK,
        f"no Podman service answers on {PODMAN_SOCK} (scripts/ensure-engine.sh --podman starts one)",
    )


def run_state_dir(environment: Mapping[str, str]) -> Path:
    """The test run's ContainAI state folder (where Podman's copy of the syscall filter goes), never
    the developer's own."""
    return Paths.from_env(environment).state_dir


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for running the installed console scripts against the Docker engine."""
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "CONTAINAI_RUNTIME")}
    env["CONTAINAI_HOME"] = str(tmp_path_factory.mktemp("containai-home"))
    # A developer's own Claude login in HOME must never be refreshed against the real endpoint.
    env["CONTAINAI_CLAUDE_TOKEN_URL"] = "http://127.0.0.1:9/no-refresh-in-tests"  # noqa: S105  # a URL
    env["CONTAINAI_LABELS"] = SESSION_SCOPE
    if (ca := ca_bundle()) is not None:
        env["CONTAINAI_EXTRA_CA_CERT"] = str(ca)
    return env


@pytest.fixture()
def env(engine: Engine, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The CLI's environment for one test on ``engine``: its own HOME, CONTAINAI_HOME and git config."""
    home = tmp_path / "home"
    home.mkdir()
    environment = {**engine.env, "HOME": str(home), "CONTAINAI_HOME": str(tmp_path / "containai")}
    environment["PATH"] = f"{BIN}:{environment.get('PATH', '')}"
    # A global git config of the test's own for safe.directory entries; the user's is never touched.
    environment["GIT_CONFIG_GLOBAL"] = str(tmp_path / "gitconfig")
    os.environ["GIT_CONFIG_GLOBAL"] = environment["GIT_CONFIG_GLOBAL"]
    yield environment
    del os.environ["GIT_CONFIG_GLOBAL"]
    remove_test_sessions(environment)


def remove_test_sessions(environment: dict[str, str]) -> None:
    """This test run's sessions only: never a developer's own on the same engine."""
    subprocess.run(
        [str(BIN / "remove-agent"), "--all", "--no-push", "--yes", "--label", SESSION_SCOPE],
        env=environment,
        capture_output=True,
        check=False,
    )


def containai(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed `containai` console script (the real entry point, not an import)."""
    exe = Path(sys.executable).parent / "containai"
    command = [str(exe) if exe.exists() else shutil.which("containai") or "containai", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"containai {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def _build_images(kind: EngineKind, cli_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """All images for the dev channel on one engine, built (or found unchanged in its cache)."""
    env = {**cli_env, "CONTAINAI_RUNTIME": kind}
    if os.environ.get("CONTAINAI_TEST_IMAGES") == "built":
        # Images already built from this tree (by scripts/test.sh, or by hand in a worktree whose
        # images differ from another's): only check that each is there.
        listed = containai("images", "list", "--channel", CHANNEL, env=env, check=False)
        return subprocess.CompletedProcess(listed.args, 0, listed.stdout, listed.stderr)
    return containai("images", "build", "--agents", "all", "--channel", CHANNEL, env=env)


@pytest.fixture(scope="session")
def docker_images(docker_client: Any, cli_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _build_images("docker", cli_env)


@pytest.fixture(scope="session")
def podman_images(podman_client: Any, cli_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _build_images("podman", cli_env)


@pytest.fixture(scope="session")
def built_images(docker_images: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The Docker images, for the tests that run on Docker only (images, squid.conf, doctor)."""
    return docker_images


@dataclass(frozen=True)
class Engine:
    """One engine under test: which, an SDK client on its socket, and the CLI environment choosing it."""

    kind: EngineKind
    client: Any
    env: Mapping[str, str]

    @property
    def sock(self) -> Path:
        return SOCKETS[self.kind]

    def runtime(self) -> EngineRuntime:
        """ContainAI's own runtime on this engine (close it after use)."""
        return EngineRuntime(
            EngineChoice(f"unix://{self.sock}", self.kind, "test fixture"), state_dir=run_state_dir(self.env)
        )


@pytest.fixture(params=["docker", "podman"])
def engine(request: pytest.FixtureRequest, cli_env: dict[str, str]) -> Engine:
    """Each engine in turn, with this run's images built on it."""
    kind: EngineKind = request.param
    client = request.getfixturevalue(f"{kind}_client")
    request.getfixturevalue(f"{kind}_images")
    return Engine(kind, client, {**cli_env, "CONTAINAI_RUNTIME": kind})


@pytest.fixture()
def runtime(engine: Engine) -> Iterator[EngineRuntime]:
    """ContainAI's runtime on ``engine``."""
    made = engine.runtime()
    yield made
    made.close()


@pytest.fixture()
def docker_runtime(docker_client: Any, cli_env: dict[str, str]) -> Iterator[EngineRuntime]:
    runtime = EngineRuntime(
        EngineChoice(f"unix://{DOCKER_SOCK}", "docker", "test fixture"), state_dir=run_state_dir(cli_env)
    )
    yield runtime
    runtime.close()


@pytest.fixture()
def podman_runtime(podman_client: Any, cli_env: dict[str, str]) -> Iterator[EngineRuntime]:
    runtime = EngineRuntime(
        EngineChoice(f"unix://{PODMAN_SOCK}", "podman", "test fixture"), state_dir=run_state_dir(cli_env)
    )
    yield runtime
    runtime.close()


def run(client: Any, image: str, command: list[str] | str, **kwargs: Any) -> tuple[int, str]:
    """Run a labelled container to completion; return its exit code and output, then remove it."""
    kwargs.setdefault("ulimits", ULIMITS)
    container = client.containers.run(image, command, detach=True, labels=LABELS, **kwargs)
    try:
        status = container.wait(timeout=300)
        output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        return int(status["StatusCode"]), output
    finally:
        container.remove(force=True)


@pytest.fixture()
def fake_internet(engine: Engine) -> Iterator[Any]:
    """A fresh "internet" of local canaries on an --internal 198.18.<k>.0/24 network (see fakenet.py)."""
    from .fakenet import FakeInternet

    with FakeInternet(engine.client, image=f"containai-base:{CHANNEL}", labels=LABELS, run_id=RUN_ID) as net:
        yield net
