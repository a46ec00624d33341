"""The ``ContainerRuntime`` contract: one set of test bodies against FakeRuntime, Docker and Podman.

What each protocol method does that the rest of ContainAI can observe: results, statuses, not-found
answers and refusals (always an ``EngineError``, mapped in one place). Where the fake has no real
processes or files, the test scripts its answer (``given_exec``, ``given_file``); the engines run it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from containai.errors import EngineAPIError, EngineError, ExecTimedOut
from containai.runtime.base import (
    BuildEvent,
    BuildSpec,
    ContainerRuntime,
    ContainerSpec,
    ExecSpec,
    FileTail,
    Mount,
)
from containai.runtime.engine import EXEC_GRACE_SECONDS, EngineRuntime
from containai.runtime.fake import FakeRuntime
from containai.runtime.select import EngineChoice, EngineKind
from containai.text import OutputTail

from .conftest import CHANNEL, LABELS, SOCKETS, run_state_dir
from .fakenet import wait_until

pytestmark = pytest.mark.engine

IMAGE = f"containai-base:{CHANNEL}"
ENGINES: list[EngineKind] = ["docker", "podman"]


@pytest.fixture(params=["fake", "docker", "podman"])
def rt(request: pytest.FixtureRequest) -> Iterator[ContainerRuntime]:
    if request.param == "fake":
        fake = FakeRuntime()
        fake.add_image(IMAGE)
        yield fake
        return
    request.getfixturevalue(f"{request.param}_client")
    request.getfixturevalue(f"{request.param}_images")
    runtime = EngineRuntime(
        EngineChoice(f"unix://{SOCKETS[request.param]}", request.param, "contract"),
        state_dir=run_state_dir(request.getfixturevalue("cli_env")),
    )
    yield runtime
    for container in runtime.containers(LABELS):
        runtime.remove_container(container.id)
    runtime.close()


def given_exec(rt: ContainerRuntime, argv: tuple[str, ...], code: int, stdout: bytes = b"") -> None:
    """On the fake, script what ``argv`` answers; an engine runs it for real."""
    if isinstance(rt, FakeRuntime):
        rt.script_exec(" ".join(argv), code=code, stdout=stdout)


def given_file(rt: ContainerRuntime, ref: str, path: str, data: bytes) -> None:
    """A file in the container: the fake is told; in an engine's container root writes it."""
    if isinstance(rt, FakeRuntime):
        rt.files[(ref, path)] = data
    else:
        # A new volume is root's on Docker and the container user's on Podman: whoever can, writes.
        answers = [
            rt.exec(ref, ExecSpec(("sh", "-c", f"cat > {path}"), user=u, stdin=data))
            for u in ("0:0", "1000:1000")
        ]
        assert 0 in answers, answers


def spec(name: str, **overrides: Any) -> ContainerSpec:
    """A small hardened container, with tmpfs owned by its user and by another uid (the dialects)."""
    values: dict[str, Any] = {
        "image": IMAGE,
        "name": name,
        "command": ("sleep", "300"),
        "entrypoint": (),
        "labels": {**LABELS, "contract": name},
        "user": "1000:1000",
        "tmpfs": {
            "/tmp": "rw,noexec,nosuid,nodev,size=16m",  # the container's own tmpfs
            "/home/agent": "rw,noexec,nosuid,nodev,size=16m,uid=1000,gid=1000,mode=0700",
            "/run/containai": "rw,noexec,nosuid,nodev,size=1m,mode=0755",
            "/run/containai/other": "rw,noexec,nosuid,nodev,size=1m,uid=65531,gid=65531,mode=0711",
        },
        "memory_bytes": 256 * 2**20,
        "nano_cpus": 10**9,
        "pids_limit": 128,
    }
    return ContainerSpec(**{**values, **overrides})


def fresh(prefix: str) -> str:
    return f"containai-contract-{prefix}-{uuid.uuid4().hex[:8]}"


def test_info_and_images(rt: ContainerRuntime, tmp_path: Path) -> None:
    info = rt.info()
    assert info.kind in ("docker", "podman") and info.version
    assert rt.image(f"containai-contract-absent:{uuid.uuid4().hex[:8]}") is None
    base = rt.image(IMAGE)
    assert base is not None and base.id
    assert any(tag.endswith(IMAGE) for tag in base.tags)  # Podman names it docker.io/library/...
    (tmp_path / "Dockerfile").write_text(f"FROM {IMAGE}\nLABEL contract=yes\n")
    tag = f"containai-contract-built:{uuid.uuid4().hex[:8]}"
    events: list[BuildEvent] = []
    built = rt.build(BuildSpec(tmp_path, tag, {}, dict(LABELS)), events.append)
    try:
        assert any(event.step for event in events)
        assert built.labels.get("ai.containai.test") == LABELS["ai.containai.test"]
        assert rt.image(tag) is not None
    finally:
        if isinstance(rt, EngineRuntime):
            rt.client.images.remove(tag, force=True)


def test_a_pull_that_cannot_reach_a_registry_is_an_engine_error(rt: ContainerRuntime) -> None:
    # A registry on a closed loopback port: the engines fail at once, and nothing leaves the machine.
    with pytest.raises(EngineError):
        rt.pull("127.0.0.1:9/containai-contract/none:latest")


def test_container_lifecycle(rt: ContainerRuntime) -> None:
    name = fresh("life")
    created = rt.create_container(spec(name))
    assert (created.name, created.status, created.user, created.exit_code) == (
        name,
        "created",
        "1000:1000",
        None,
    )
    assert created.labels["contract"] == name
    with pytest.raises(EngineAPIError):
        rt.create_container(spec(name))  # the name is taken
    rt.start(name)
    found = rt.container(name)
    assert found is not None and found.running and found.id == created.id
    assert [c.name for c in rt.containers({"contract": name})] == [name]
    assert rt.containers({"contract": "nobody"}) == []
    rt.stop(name, timeout=1)
    stopped = rt.container(created.id)  # ids work wherever names do
    assert stopped is not None and stopped.status == "exited" and isinstance(stopped.exit_code, int)
    rt.remove_container(name)
    assert rt.container(name) is None
    rt.remove_container(name)  # removing what is gone is no error
    rt.stop(name)  # nor is stopping it
    with pytest.raises(EngineAPIError):
        rt.start(name)


def test_exec_streams_output_and_returns_the_exit_code(rt: ContainerRuntime) -> None:
    name = fresh("exec")
    rt.create_container(spec(name))
    rt.start(name)
    argv = ("sh", "-c", "id -u; echo $GREETING; pwd; exit 3")
    given_exec(rt, argv, 3, b"1000\nhello\n/home/agent\n")
    chunks: list[tuple[str, bytes]] = []
    code = rt.exec(
        name,
        ExecSpec(argv, user="1000:1000", environment={"GREETING": "hello"}, workdir="/home/agent"),
        lambda stream, data: chunks.append((stream, data)),
    )
    assert code == 3
    assert b"".join(d for s, d in chunks if s == "stdout").split() == [b"1000", b"hello", b"/home/agent"]
    given_exec(rt, ("sh", "-c", "cat; exit 4"), 4, b"data")
    echoed: list[bytes] = []
    fed = ExecSpec(("sh", "-c", "cat; exit 4"), user="1000:1000", stdin=b"data")
    assert rt.exec(name, fed, lambda _s, data: echoed.append(data)) == 4
    assert b"".join(echoed) == b"data"
    assert rt.exec(name, ExecSpec(("sleep", "1"), user="1000:1000", detach=True)) == 0
    rt.stop(name, timeout=1)
    with pytest.raises(EngineAPIError):
        rt.exec(name, ExecSpec(("true",)))  # not running


def test_an_exec_past_its_timeout_is_stopped(rt: ContainerRuntime) -> None:
    """Killed in the container at its time limit; and should the command outlive that (its timeout
    process killed by a process of the same uid), the host still stops waiting a grace period later."""
    name = fresh("timeout")
    rt.create_container(spec(name))
    rt.start(name)
    slow = ("sh", "-c", "echo started; exec sleep 60")
    rogue = ("sh", "-c", "kill -KILL $PPID; echo started; exec sleep 61")  # kills its own timeout
    if isinstance(rt, FakeRuntime):
        rt.script_exec("sleep 60", hangs=True, stdout=b"started\n")
        rt.script_exec("sleep 61", hangs=True, stdout=b"started\n")
    output = OutputTail()
    began = time.monotonic()
    with pytest.raises(ExecTimedOut, match=f"sh in {name} ran past its limit of 1 s"):
        rt.exec(name, ExecSpec(slow, user="1000:1000", timeout=1), output)
    assert time.monotonic() - began < 1 + 10
    assert b"started" in output.data
    # Its timeout killed: Docker's exec goes on while the command holds its output (the host's own
    # deadline ends the wait); Podman's ends with its first process (killed: 137). Either way the host
    # waits no longer than the limit and the grace, and does not take it for a success.
    began = time.monotonic()
    try:
        code = rt.exec(name, ExecSpec(rogue, user="1000:1000", timeout=1))
    except ExecTimedOut:
        code = None
    assert time.monotonic() - began < 1 + EXEC_GRACE_SECONDS + 10
    assert code != 0
    if not isinstance(rt, FakeRuntime):
        listed: list[bytes] = []
        ps = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done"
        rt.exec(name, ExecSpec(("sh", "-c", ps), user="1000:1000"), lambda _s, d: listed.append(d))
        assert b"sleep 60" not in b"".join(listed)  # killed at its limit
    given_exec(rt, ("true",), 0)
    assert rt.exec(name, ExecSpec(("true",), user="1000:1000", timeout=30)) == 0  # in time: its own code
    rt.remove_container(name)


def test_read_tail_from_a_volume(rt: ContainerRuntime) -> None:
    """As the proxy's audit is read: from a volume (Docker's archive API does not see into a tmpfs)."""
    name, volume = fresh("read"), fresh("readvol")
    rt.create_volume(volume, labels={**LABELS, "contract": name})
    try:
        rt.create_container(spec(name, mounts=(Mount("/data", volume, "volume"),)))
        rt.start(name)
        given_file(rt, name, "/data/note", b"contents\n")
        assert rt.read_tail(name, "/data/note", max_bytes=100) == FileTail(b"contents\n", 9)
        assert rt.read_tail(name, "/data/note", max_bytes=3) == FileTail(b"ts\n", 9)
        assert rt.read_tail(name, "/data/absent", max_bytes=100) is None
        rt.stop(name, timeout=1)
        # also once it has stopped
        assert rt.read_tail(name, "/data/note", max_bytes=100) == FileTail(b"contents\n", 9)
    finally:
        rt.remove_container(name)
        rt.remove_volume(volume)


def test_a_fed_start_hands_over_stdin(rt: ContainerRuntime) -> None:
    name = fresh("stdin")
    rt.create_container(spec(name, command=("sh", "-c", "cat > /tmp/got; sleep 300"), stdin_open=True))
    feed = rt.start_fed(name)
    feed.send(b"secret\n")
    feed.close()
    found = rt.container(name)
    assert found is not None and found.running
    if isinstance(rt, FakeRuntime):
        assert (name, b"secret\n") in rt.inputs
        return

    def read() -> bytes:
        out: list[bytes] = []
        rt.exec(name, ExecSpec(("cat", "/tmp/got"), user="1000:1000"), lambda _s, data: out.append(data))
        return b"".join(out)

    assert wait_until(read, lambda data: data == b"secret\n") == b"secret\n"


def test_volumes_and_networks(rt: ContainerRuntime) -> None:
    volume, network = fresh("vol"), fresh("net")
    labels = {**LABELS, "contract": volume}
    made = rt.create_volume(volume, labels=labels)
    assert made.name == volume and made.labels["contract"] == volume
    assert [v.name for v in rt.volumes({"contract": volume})] == [volume]
    rt.remove_volume(volume)
    rt.remove_volume(volume)
    assert rt.volumes({"contract": volume}) == []
    net = rt.create_network(network, labels={**LABELS, "contract": network}, internal=True)
    assert net.name == network
    assert [n.name for n in rt.networks({"contract": network})] == [network]
    rt.remove_network(network)
    rt.remove_network(network)
    assert rt.networks({"contract": network}) == []


def test_a_container_mounts_a_named_volume(rt: ContainerRuntime) -> None:
    name, volume = fresh("mnt"), fresh("mntvol")
    rt.create_volume(volume, labels={**LABELS, "contract": name})
    try:
        rt.create_container(spec(name, mounts=(Mount("/home/agent/data", volume, "volume"),)))
        rt.start(name)
        found = rt.container(name)
        assert found is not None and found.running
    finally:
        rt.remove_container(name)
        rt.remove_volume(volume)


@pytest.mark.parametrize("kind", ENGINES)
def test_tmpfs_keep_their_owner_flags_and_size_on_each_engine(
    kind: EngineKind, request: pytest.FixtureRequest
) -> None:
    """The dialects: the same tmpfs owners, modes, noexec/nosuid/nodev and sizes on both engines,
    and nothing writable that the spec did not ask for."""
    request.getfixturevalue(f"{kind}_images")
    runtime = EngineRuntime(
        EngineChoice(f"unix://{SOCKETS[kind]}", kind, "contract"),
        state_dir=run_state_dir(request.getfixturevalue("cli_env")),
    )
    name = fresh("tmpfs")
    try:
        runtime.create_container(spec(name))
        runtime.start(name)
        script = (
            "stat -c '%n %u %g %a' /home/agent /run/containai /run/containai/other; "
            "grep -E ' /(home/agent|run/containai|run/containai/other|tmp) ' /proc/mounts; "
            "for d in / /run /var/tmp /tmp /home/agent /run/containai /run/containai/other /var/run; do "
            "touch $d/w 2>/dev/null && echo WRITABLE $d; done; "
            "cp /bin/true /tmp/t && /tmp/t && echo EXEC"
        )
        out: list[bytes] = []
        runtime.exec(name, ExecSpec(("sh", "-c", script), user="1000:1000"), lambda _s, d: out.append(d))
        text = b"".join(out).decode()
        assert "/home/agent 1000 1000" in text and "/run/containai 0 0 755" in text
        assert "/run/containai/other 65531 65531 711" in text
        mounts = {
            line.split()[1]: line.split()[3].split(",") for line in text.splitlines() if " tmpfs " in line
        }
        for target in ("/home/agent", "/run/containai", "/run/containai/other", "/tmp"):
            assert {"noexec", "nosuid", "nodev"} <= set(mounts[target]), (target, mounts[target])
        assert "size=16384k" in mounts["/home/agent"] and "size=1024k" in mounts["/run/containai/other"]
        assert sorted(line for line in text.splitlines() if line.startswith("WRITABLE")) == [
            "WRITABLE /home/agent",
            "WRITABLE /tmp",
        ]
        assert "EXEC" not in text
    finally:
        runtime.remove_container(name)
        assert runtime.volumes({"contract": name}) == []  # the tmpfs volume went with it
        runtime.close()
