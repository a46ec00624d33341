"""ContainAI's syscall filter, enforced by each engine: in a real session every removed syscall is
refused (EPERM, or ENOSYS for clone3) while threads, fork and the ordinary calls work, the sidecars
run under it too, and the same probe without the filter (the engine's default) sees calls through.

The probe is seccomp_probe.py (python3 and ctypes, in the container). The agent CLIs under the filter:
test_agent_clis.py, whose sessions all run under it.
"""

from __future__ import annotations

import base64
import errno
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from containai.config import Paths
from containai.runtime.base import ContainerSpec, ExecSpec
from containai.runtime.seccomp import containai_profile
from containai.session.naming import ROLE

from .conftest import CHANNEL, LABELS, SESSION_SCOPE, Engine
from .test_egress import lab_env, results  # noqa: F401  # lab_env: a fixture
from .test_sessions import make_repo, program

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

PROBE = (Path(__file__).parent / "seccomp_probe.py").read_text()
PROBE_LINE = f"echo {base64.b64encode(PROBE.encode()).decode()} | base64 -d | python3 -"
ORDINARY = ("getpid", "personality_query")
# What the probe shows of the engines' own default filters on this host's kernel (measured): calls
# that reach the kernel without ContainAI's filter, so the session test fails if the filter is off.
THROUGH_WITHOUT_FILTER = {
    "docker": {
        "ptrace",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "adjtimex",
        "fanotify_mark",
    },
    "podman": {
        *("ptrace", "process_vm_readv", "process_vm_writev", "keyctl", "unshare", "setns", "mount"),
        *("umount2", "clone", "clone3", "name_to_handle_at", "adjtimex", "pidfd_getfd", "fanotify_mark"),
    },
}
SCOPE_KEY, _, SCOPE_VALUE = SESSION_SCOPE.partition("=")


def removed(probe: dict[str, Any]) -> dict[str, list[int]]:
    return {name: answer for name, answer in probe["calls"].items() if name not in ORDINARY}


def refused(answer: list[int]) -> bool:
    return answer[0] == -1 and answer[1] in (errno.EPERM, errno.ENOSYS)


def parse_probe(output: str) -> dict[str, Any]:
    line = next(line for line in output.splitlines() if line.startswith('{"arch"'))
    probe: dict[str, Any] = json.loads(line)
    if probe["arch"] != "x86_64":
        pytest.skip(f"the probe knows x86_64's syscall numbers only, not {probe['arch']}'s")
    return probe


def assert_filtered(probe: dict[str, Any]) -> None:
    through = {name: answer for name, answer in removed(probe).items() if not refused(answer)}
    assert through == {}
    assert probe["calls"]["clone3"][1] == errno.ENOSYS  # so glibc falls back to clone
    assert all(probe["calls"][name][0] >= 0 for name in ORDINARY)
    assert probe["threads"] and probe["fork"]


def session_containers(engine: Engine) -> list[Any]:
    return [
        c
        for c in engine.client.containers.list(filters={"label": f"{SCOPE_KEY}={SCOPE_VALUE}"})
        if c.name.endswith("-proxy") or c.labels.get(ROLE) == "agent"
    ]


def carries_the_profile(container: Any, state_dir: Path) -> bool:
    """The container was created with ContainAI's profile: inline (Docker) or as our file (Podman)."""
    for option in container.attrs["HostConfig"].get("SecurityOpt") or []:
        key, _, value = option.partition("=")
        if key != "seccomp":
            continue
        text = (state_dir / "seccomp" / Path(value).name).read_text() if value.startswith("/") else value
        return bool(json.loads(text) == containai_profile().document)
    return False


def test_a_session_refuses_each_removed_syscall_and_its_sidecar_runs_under_the_filter(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    engine: Engine,
) -> None:
    repo = make_repo(tmp_path)
    script = (
        f"{PROBE_LINE}; "
        'echo "R allowed $(curl -s --max-time 10 http://allowed.test/)"; '
        "sleep 8"  # while the host looks at the session's containers
    )
    args = ["run", "shell", str(repo), "--channel", CHANNEL, "--no-push", "--prompt", script]
    running = subprocess.Popen(
        [program(lab_env, "containai"), *args, "--allow-domain", "allowed.test"],
        env=lab_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[Any] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and running.poll() is None and len(seen) < 2:
        seen = session_containers(engine)
        time.sleep(0.5)
    names = sorted(c.name for c in seen)
    stdout, stderr = running.communicate(timeout=300)
    assert running.returncode == 0, stderr
    assert len(names) == 2 and names[1].endswith("-proxy"), names
    state_dir = Paths.from_env(lab_env).state_dir
    assert all(carries_the_profile(c, state_dir) for c in seen), names
    assert results(stdout)["allowed"]  # squid, under the filter, carried the request
    assert_filtered(parse_probe(stdout))


@pytest.fixture()
def probe_in(engine: Engine) -> Iterator[Any]:
    """Runs the probe in a container of the session's agent image, with or without the filter."""
    runtime = engine.runtime()
    made: list[str] = []

    def run(spec_seccomp: bool) -> dict[str, Any]:
        name = f"containai-test-seccomp-{uuid.uuid4().hex[:8]}"
        spec = ContainerSpec(
            image=f"containai-base:{CHANNEL}",
            name=name,
            command=("sleep", "300"),
            entrypoint=(),
            labels=LABELS,
            user="1000:1000",
            nano_cpus=10**9,
        )
        runtime.create_container(spec if spec_seccomp else replace(spec, seccomp=None))
        made.append(name)
        runtime.start(name)
        chunks: list[bytes] = []
        code = runtime.exec(
            name, ExecSpec(argv=("python3", "-c", PROBE), timeout=60), lambda _, data: chunks.append(data)
        )
        output = b"".join(chunks).decode()
        assert code == 0, output
        return parse_probe(output)

    yield run
    for name in made:
        runtime.remove_container(name)
    runtime.close()


def test_without_the_filter_the_probe_sees_calls_through(engine: Engine, probe_in: Any) -> None:
    assert_filtered(probe_in(True))
    default = removed(probe_in(False))
    through = {name for name, answer in default.items() if not refused(answer)}
    assert THROUGH_WITHOUT_FILTER[engine.kind] <= through, default
