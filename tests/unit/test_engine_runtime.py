"""``EngineRuntime`` end to end through the real Docker SDK, against a fake Engine API on a Unix socket.

Each test body runs once with Docker 20.10's recorded answers and once with Podman 4.3's.
"""

from __future__ import annotations

import gc
import io
import json
import os
import pty
import re
import sys
import tarfile
import tempfile
import termios
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from containai.errors import BuildError, EngineAPIError, EngineError, EngineUnavailable, ExecTimedOut
from containai.runtime import engine as engine_module
from containai.runtime.base import BuildEvent, BuildSpec, ContainerSpec, ExecSpec, Mount
from containai.runtime.engine import PODMAN_EXEC_GATE, EngineRuntime, parse_engine_info, translate
from containai.runtime.seccomp import containai_profile
from containai.runtime.select import EngineChoice

from .engine_api import DIALECTS, ExecResult, FakeEngineAPI, Hijack, Reply, frame, load_dialect, tar_of

LABELS = {"ai.containai.session": "s1", "ai.containai.owner": "dev"}


@pytest.fixture(params=DIALECTS)
def api(request: pytest.FixtureRequest) -> Iterator[FakeEngineAPI]:
    # A short directory of its own: a Unix socket's path must fit in 108 bytes.
    with (
        tempfile.TemporaryDirectory(prefix="cai-engine-") as folder,
        FakeEngineAPI(request.param, Path(folder) / "engine.sock") as fake,
    ):
        yield fake


@pytest.fixture
def runtime(api: FakeEngineAPI) -> Iterator[EngineRuntime]:
    engine = EngineRuntime(EngineChoice(api.base_url, None, "test socket"))
    yield engine
    engine.close()


def collect_abandoned_sockets() -> None:
    """Close, now and quietly, the sockets of streams the SDK gives no way to close.

    An abandoned build stream, an abandoned archive stream and a failed connect each leave a socket
    in a reference cycle inside the SDK; the garbage collector closes it later, warning as it does.
    Collected here, in the test that abandoned it, the warning cannot fail whichever test runs next.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def spec(**overrides: Any) -> ContainerSpec:
    values: dict[str, Any] = {
        "image": "containai-claude:dev",
        "name": "containai-s1-agent",
        "command": ("sleep", "infinity"),
        "labels": LABELS,
    }
    return ContainerSpec(**(values | overrides))


# The engine itself.


def test_info_parses_the_engines_own_answers(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    info = runtime.info()
    version = api.fixtures["version"]["body"]
    assert info.kind == api.dialect
    assert info.version == version["Version"]
    assert info.api_version == "1.41"
    assert (info.os, info.arch) == ("linux", "amd64")
    assert info.security_options == ("name=seccomp,profile=default",)
    assert info.rootless is False
    assert info.storage_driver == api.fixtures["info"]["body"]["Driver"]
    assert info.root_dir == api.fixtures["info"]["body"]["DockerRootDir"]


def test_info_reads_runc_version_and_commit(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    # Both engines here run Debian's runc 1.1.5+ds1-1+deb12u1; Podman names it "OCI Runtime (runc)".
    info = runtime.info()
    assert info.runc_version == "1.1.5+ds1"
    assert info.runc_commit == "1.1.5+ds1-1+deb12u1"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_rootless_is_read_from_security_options(dialect: str) -> None:
    recorded = load_dialect(dialect)
    info = dict(recorded["info"]["body"])
    info["SecurityOptions"] = [*info["SecurityOptions"], "name=rootless", "name=cgroupns"]
    parsed = parse_engine_info(recorded["version"]["body"], info)
    assert parsed.rootless is True
    assert parsed.security_options[-2:] == ("name=rootless", "name=cgroupns")


def test_podman_with_crun_reports_no_runc() -> None:
    version = load_dialect("podman")["version"]["body"]
    crun = {"Name": "OCI Runtime (crun)", "Version": "crun version 1.8.1\ncommit: f8a096be\n+SECCOMP"}
    components = [c for c in version["Components"] if "runc" not in c["Name"]] + [crun]
    parsed = parse_engine_info({**version, "Components": components}, {})
    assert (parsed.kind, parsed.runc_version, parsed.runc_commit) == ("podman", "", "")


def test_engine_info_tolerates_missing_fields() -> None:
    parsed = parse_engine_info({}, {})
    assert (parsed.kind, parsed.version, parsed.runc_version, parsed.rootless) == ("docker", "", "", False)


def test_refused_info_is_an_api_error(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.answer("GET", "/info", Reply(500, {"message": "database is locked"}))
    with pytest.raises(EngineAPIError, match="refused to report its version: database is locked"):
        runtime.info()


def test_no_engine_at_the_socket_is_unavailable(tmp_path: Path) -> None:
    choice = EngineChoice(f"unix://{tmp_path}/absent.sock", "podman", "flag --runtime")
    engine = EngineRuntime(choice)
    with pytest.raises(EngineUnavailable) as caught:
        engine.info()
    assert caught.value.message == f"cannot reach the container engine at {choice.base_url} (flag --runtime)"
    assert caught.value.hint is not None
    assert "--runtime" in caught.value.hint
    engine.close()
    collect_abandoned_sockets()  # docker-py does not close the socket whose connect failed


def test_translate_keeps_other_errors_apart() -> None:
    choice = EngineChoice("unix:///x.sock", None, "test")
    error = translate(ValueError("odd answer"), choice, "list things")
    assert type(error) is EngineError
    assert error.message == "engine error while trying to list things: odd answer"


def test_close_is_idempotent_and_reconnects_lazily(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    runtime.info()
    runtime.close()
    runtime.close()
    assert runtime.info().kind == api.dialect


# Images.


def test_image_found_and_missing(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    image_id = api.add_image("containai-base:dev", {"ai.containai.part": "base"})
    found = runtime.image("containai-base:dev")
    assert found is not None
    assert found.id == image_id
    assert found.tags == ("containai-base:dev",)
    assert found.labels == {"ai.containai.part": "base"}
    assert found.size == api.fixtures["image_inspect"]["body"]["Size"]
    assert found.created == api.fixtures["image_inspect"]["body"]["Created"]
    assert runtime.image("containai-nothing:dev") is None


def test_image_lookup_refused(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.answer("GET", "/images/.*/json", Reply(500, {"message": "layer store broken"}))
    with pytest.raises(EngineAPIError, match="inspect image x:y: layer store broken"):
        runtime.image("x:y")


def test_pull_without_registry_is_refused(runtime: EngineRuntime) -> None:
    with pytest.raises(EngineAPIError, match="refused to pull debian:bookworm-slim"):
        runtime.pull("debian:bookworm-slim")


def test_pull_returns_the_pulled_image(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.answer("POST", "/images/create", Reply(200, lines=['{"status":"Pulling from library/debian"}']))
    api.add_image("debian:latest")
    assert runtime.pull("debian").tags == ("debian:latest",)
    pulled = api.last("POST", "/images/create")
    assert (pulled.param("fromImage"), pulled.param("tag")) == ("debian", "latest")


def test_build_streams_events_and_returns_the_image(
    api: FakeEngineAPI, runtime: EngineRuntime, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM containai-debian:bookworm\nRUN echo built\n")
    events: list[BuildEvent] = []
    built = runtime.build(
        BuildSpec(tmp_path, "containai-base:dev", {"CHANNEL": "dev"}, {"ai.containai.part": "base"}),
        events.append,
    )
    assert built.tags == ("containai-base:dev",)
    assert built.labels == {"ai.containai.part": "base"}
    request = api.last("POST", "/build")
    assert request.param("t") == "containai-base:dev"
    assert json.loads(request.param("buildargs") or "") == {"CHANNEL": "dev"}
    assert json.loads(request.param("labels") or "") == {"ai.containai.part": "base"}
    assert (request.param("rm"), request.param("forcerm")) == ("True", "True")
    steps = [e.text for e in events if e.step]
    assert len(steps) == 3
    assert steps[0].upper().startswith("STEP 1/3")
    assert "built" in [e.text for e in events]
    assert all(e.text.strip() for e in events)  # blank stream lines are dropped
    assert not any(e.cached for e in events)


def test_build_marks_cached_steps(api: FakeEngineAPI, runtime: EngineRuntime, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    lines = ['{"stream":"Step 1/2 : FROM scratch\\n"}', '{"stream":" ---\\u003e Using cache\\n"}']
    api.answer("POST", "/build", Reply(200, lines=lines))
    api.add_image("t:dev")
    events: list[BuildEvent] = []
    runtime.build(BuildSpec(tmp_path, "t:dev", {}, {}), events.append)
    assert events == [
        BuildEvent("Step 1/2 : FROM scratch", step=True),
        BuildEvent(" ---> Using cache", cached=True),
    ]


def test_build_failure_carries_the_engines_message(
    api: FakeEngineAPI, runtime: EngineRuntime, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM containai-debian:bookworm\nRUN exit 3\n")
    api.answer("POST", "/build", Reply(200, lines=api.fixtures["build_failure"]["lines"]))
    events: list[BuildEvent] = []
    with pytest.raises(BuildError) as caught:
        runtime.build(BuildSpec(tmp_path, "t:dev", {}, {}), events.append)
    assert caught.value.part == "t:dev"
    assert "exit 3" in caught.value.detail
    assert caught.value.detail == caught.value.detail.strip()
    assert any(e.step for e in events)
    collect_abandoned_sockets()


def test_build_whose_image_is_missing_afterwards(
    api: FakeEngineAPI, runtime: EngineRuntime, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    api.answer("GET", "/images/.*/json", api.fixture("image_missing"))
    with pytest.raises(BuildError, match="the image is not there"):
        runtime.build(BuildSpec(tmp_path, "t:dev", {}, {}), lambda e: None)


def test_build_refused_before_streaming(api: FakeEngineAPI, runtime: EngineRuntime, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    api.answer("POST", "/build", Reply(500, {"message": "no space left on device"}))
    with pytest.raises(EngineAPIError, match="build t:dev: no space left on device"):
        runtime.build(BuildSpec(tmp_path, "t:dev", {}, {}), lambda e: None)


def test_import_rootfs_tags_and_labels_the_image(
    api: FakeEngineAPI, runtime: EngineRuntime, tmp_path: Path
) -> None:
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(tar_of({"etc/os-release": b"ID=debian\n"}))
    imported = runtime.import_rootfs(
        tarball,
        tag="containai-debian:bookworm",
        labels={"ai.containai.part": "bootstrap", "ai.containai.schema": "1"},
        changes=['CMD ["/bin/bash"]'],
    )
    assert "containai-debian:bookworm" in imported.tags
    assert imported.labels == {"ai.containai.part": "bootstrap", "ai.containai.schema": "1"}
    request = api.last("POST", "/images/create")
    assert (request.param("fromSrc"), request.param("repo"), request.param("tag")) == (
        "-",
        "containai-debian",
        "bookworm",
    )
    assert request.query["changes"] == [
        'CMD ["/bin/bash"]',
        'LABEL ai.containai.part="bootstrap"',
        'LABEL ai.containai.schema="1"',
    ]
    assert request.body == tarball.read_bytes()
    tagged = api.last("POST", "/images/.*/tag")
    assert (tagged.param("repo"), tagged.param("tag")) == ("containai-debian", "bookworm")
    # Podman files the import as :latest; ContainAI takes back the tag nobody asked for.
    assert runtime.image("containai-debian:latest") is None


def test_import_keeps_an_existing_latest(api: FakeEngineAPI, runtime: EngineRuntime, tmp_path: Path) -> None:
    api.add_image("containai-debian:latest")
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(tar_of({"a": b"a"}))
    runtime.import_rootfs(tarball, tag="containai-debian:bookworm", labels={})
    assert not api.requests_to("DELETE", "/images/.*")


def test_import_that_the_engine_does_not_list(
    api: FakeEngineAPI, runtime: EngineRuntime, tmp_path: Path
) -> None:
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(tar_of({"a": b"a"}))
    api.answer("POST", "/images/create", Reply(200, "not json\n"))
    with pytest.raises(EngineAPIError, match="accepted containai-x but does not list it"):
        runtime.import_rootfs(tarball, tag="containai-x", labels={})


def test_import_refused(api: FakeEngineAPI, runtime: EngineRuntime, tmp_path: Path) -> None:
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(b"not a tar")
    api.answer("POST", "/images/create", Reply(500, {"message": "archive/tar: invalid tar header"}))
    with pytest.raises(EngineAPIError, match="import containai-x:1: archive/tar: invalid tar header"):
        runtime.import_rootfs(tarball, tag="containai-x:1", labels={})


# Containers.


def test_create_container_sends_the_hardening(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    created = runtime.create_container(
        spec(
            user="1000:1000",
            environment={"HOME": "/home/agent", "TERM": "xterm"},
            working_dir="/workspace",
            hostname="agent",
            mounts=(
                Mount("/repo", "/home/dev/project", kind="bind", read_only=True),
                Mount("/workspace", "containai-s1-work"),
            ),
            tmpfs={"/tmp": "rw,nosuid,nodev,size=512m", "/run": "rw,noexec"},
            cap_add=("CHOWN",),
            network_mode="containai-s1-net",
            pids_limit=256,
            memory_bytes=2**30,
            nano_cpus=10**9,
            ulimits=(("nofile", 1024, 2048), ("nproc", 512, 512)),
            entrypoint=("/usr/local/bin/containai-entrypoint",),
        )
    )
    assert created.name == "containai-s1-agent"
    assert created.status == "created"
    assert created.labels == LABELS
    assert created.image == "containai-claude:dev"
    assert created.id in api.containers

    request = api.last("POST", "/containers/create")
    assert request.param("name") == "containai-s1-agent"
    body = request.json()
    assert body["Image"] == "containai-claude:dev"
    assert body["Cmd"] == ["sleep", "infinity"]
    assert body["Entrypoint"] == ["/usr/local/bin/containai-entrypoint"]
    assert body["Labels"] == LABELS
    assert body["User"] == "1000:1000"
    assert sorted(body["Env"]) == ["HOME=/home/agent", "TERM=xterm"]
    assert body["WorkingDir"] == "/workspace"
    assert body["Hostname"] == "agent"
    assert body["Tty"] is False
    assert body["OpenStdin"] is False
    host = body["HostConfig"]
    # Every option asked for; an engine's dialect may add its own (Podman's notmpcopyup) and paths.
    for path, options in {"/tmp": "rw,nosuid,nodev,size=512m", "/run": "rw,noexec"}.items():
        assert set(options.split(",")) <= set(host["Tmpfs"][path].split(","))
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == ["CHOWN"]
    assert host["SecurityOpt"][0] == "no-new-privileges:true"
    seccomp = host["SecurityOpt"][1].removeprefix("seccomp=")
    assert seccomp.startswith("/") == (runtime.kind == "podman")  # Podman reads it from a file
    text = Path(seccomp).read_text() if seccomp.startswith("/") else seccomp
    assert json.loads(text) == containai_profile().document
    assert len(host["SecurityOpt"]) == 2
    assert host.get("Privileged", False) is False  # the SDK leaves out a false Privileged
    assert host["NetworkMode"] == "containai-s1-net"
    assert host["PidsLimit"] == 256
    assert host["Memory"] == host["MemorySwap"] == 2**30
    assert host["NanoCpus"] == 10**9
    assert host["Ulimits"] == [
        {"Name": "nofile", "Soft": 1024, "Hard": 2048},
        {"Name": "nproc", "Soft": 512, "Hard": 512},
    ]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    assert host["Mounts"] == [
        {
            "Target": "/repo",
            "Source": "/home/dev/project",
            "Type": "bind",
            "ReadOnly": True,
            "BindOptions": {"Propagation": "rprivate"},
        },
        {"Target": "/workspace", "Source": "containai-s1-work", "Type": "volume", "ReadOnly": False},
    ]


def test_create_with_defaults_leaves_optional_fields_to_the_engine(
    api: FakeEngineAPI, runtime: EngineRuntime
) -> None:
    runtime.create_container(spec())
    body = api.last("POST", "/containers/create").json()
    for absent in ("User", "WorkingDir", "Hostname", "Entrypoint"):
        assert absent not in body
    assert "CapAdd" not in body["HostConfig"]
    assert body["HostConfig"]["NetworkMode"] == "none"


def test_create_with_stdin_open_sets_stdin_once(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    runtime.create_container(spec(stdin_open=True))
    body = api.last("POST", "/containers/create").json()
    assert (body["OpenStdin"], body["StdinOnce"], body["AttachStdin"]) == (True, True, True)


def test_create_with_a_name_in_use_is_refused(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    runtime.create_container(spec())
    # Docker answers 409, Podman 4.3 answers 500: both are the engine refusing.
    with pytest.raises(EngineAPIError) as caught:
        runtime.create_container(spec())
    assert caught.value.message.startswith("the engine refused to create container containai-s1-agent: ")
    assert "already in use" in caught.value.message


def test_container_lifecycle(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    created = runtime.create_container(spec())
    runtime.start(created.name)
    found = runtime.container(created.name)
    assert found is not None
    assert found.running
    assert found.id == created.id
    runtime.stop(created.id, timeout=3)
    assert api.last("POST", r"/containers/.*/stop").param("t") == "3"
    assert not (runtime.container(created.id) or found).running
    runtime.remove_container(created.id)
    removed = api.last("DELETE", r"/containers/.*")
    assert (removed.param("force"), removed.param("v")) == ("True", "True")
    assert runtime.container(created.id) is None


def test_stop_and_remove_of_a_missing_container_are_quiet(runtime: EngineRuntime) -> None:
    runtime.stop("containai-gone")
    runtime.remove_container("containai-gone")


def test_start_of_a_missing_container_is_refused(runtime: EngineRuntime) -> None:
    with pytest.raises(EngineAPIError, match=r"(?i)refused to start containai-gone: .*no such container"):
        runtime.start("containai-gone")


def test_start_that_the_runtime_refuses(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    runtime.create_container(spec())
    api.answer("POST", "/containers/.*/start", api.fixture("container_start_failure"))
    with pytest.raises(EngineAPIError, match=r"refused to start containai-s1-agent: .*runc"):
        runtime.start("containai-s1-agent")


def test_containers_by_label(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("containai-s1-agent", {**LABELS, "ai.containai.role": "agent"})
    api.add_container("containai-s1-proxy", {**LABELS, "ai.containai.role": "proxy"}, status="exited")
    api.add_container("containai-s2-agent", {"ai.containai.session": "s2", "ai.containai.owner": "dev"})
    api.add_container("someone-else", {})

    found = runtime.containers({"ai.containai.session": "s1", "ai.containai.role": ""})
    assert sorted((c.name, c.status) for c in found) == [
        ("containai-s1-agent", "running"),
        ("containai-s1-proxy", "exited"),
    ]
    request = api.last("GET", "/containers/json")
    assert request.param("all") in ("1", "True", "true")
    assert request.filters == {"label": ["ai.containai.session=s1", "ai.containai.role"]}
    assert [c.name for c in runtime.containers({"ai.containai.owner": "dev"})] != []
    assert runtime.containers({"ai.containai.session": "s3"}) == []


def test_container_info_carries_the_inspect(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("containai-s1-agent", LABELS)
    found = runtime.container("containai-s1-agent")
    assert found is not None
    assert found.created == api.fixtures["container_inspect"]["body"]["Created"]
    assert found.image == api.fixtures["container_inspect"]["body"]["Config"]["Image"]


@pytest.mark.parametrize(
    ("operation", "doing"),
    [
        (lambda rt: rt.container("c"), "inspect c"),
        (lambda rt: rt.containers({"a": "b"}), "list containers"),
        (lambda rt: rt.stop("c"), "stop c"),
        (lambda rt: rt.remove_container("c"), "(remove|inspect) c"),  # a dialect may look first
        (lambda rt: rt.create_container(spec()), "create container containai-s1-agent"),
        (lambda rt: rt.exec("c", ExecSpec(("true",))), "run true in c"),
        (lambda rt: rt.exec("c", ExecSpec(("cat",), stdin=b"x")), "run cat in c"),
        (lambda rt: rt.exec("c", ExecSpec(("sleep",), detach=True)), "start sleep in c"),
        (lambda rt: rt.exec("c", ExecSpec(("bash",), tty=True)), "attach to bash in c"),
        (lambda rt: rt.create_volume("v", labels={}), "create volume v"),
        (lambda rt: rt.volumes({}), "list volumes"),
        (lambda rt: rt.remove_volume("v"), "remove volume v"),
        (lambda rt: rt.networks({}), "list networks"),
        (lambda rt: rt.create_network("n", labels={}), "create network n"),
        (lambda rt: rt.remove_network("n"), "remove network n"),
        (lambda rt: rt.read_tail("c", "/etc/passwd", max_bytes=10), "read /etc/passwd in c"),
        (lambda rt: rt.start_fed("c"), "start c"),
    ],
)
def test_every_refusal_maps_to_an_api_error(
    api: FakeEngineAPI, runtime: EngineRuntime, operation: Callable[[EngineRuntime], object], doing: str
) -> None:
    refusal = api.fixture("container_start_failure")
    for method in ("GET", "POST", "DELETE"):
        api.answer(method, r"(?!/version$|/_ping$).*", refusal)
    with pytest.raises(EngineAPIError) as caught:
        operation(runtime)
    # What was being done, and the engine's own words: the message says both.
    assert re.search(f"refused to {doing}: ", caught.value.message)
    assert refusal.body["message"] in caught.value.message


# Exec.


def test_exec_demultiplexes_output_and_returns_the_exit_code(
    api: FakeEngineAPI, runtime: EngineRuntime
) -> None:
    api.add_container("c", LABELS)
    output: list[tuple[str, bytes]] = []
    code = runtime.exec(
        "c",
        ExecSpec(
            ("sh", "-c", "printf out; printf err >&2; exit 3"),
            user="1000:1000",
            environment={"A": "1"},
            workdir="/workspace",
        ),
        lambda stream, data: output.append((stream, data)),
    )
    # The engines' own recorded answer: "out" on stdout, "err" on stderr (in either order), exit code 3.
    assert code == 3
    assert sorted(output) == [("stderr", b"err"), ("stdout", b"out")]
    body = api.last("POST", "/containers/c/exec").json()
    argv = ["sh", "-c", "printf out; printf err >&2; exit 3"]
    # On Podman the command waits for a line on stdin, sent once the output is attached: its exec
    # can otherwise lose a short process's output.
    gated = api.dialect == "podman"
    assert body["Cmd"] == ([*PODMAN_EXEC_GATE, *argv] if gated else argv)
    assert body["User"] == "1000:1000"
    assert body["Env"] == ["A=1"]
    assert body["WorkingDir"] == "/workspace"
    assert (body["AttachStdin"], body["Tty"], body["AttachStdout"], body["AttachStderr"]) == (
        gated,
        False,
        True,
        True,
    )
    start = api.last("POST", "/exec/.*/start")
    assert start.json() == {"Tty": False, "Detach": False}
    assert start.headers["Upgrade"] == "tcp"


def test_exec_of_a_missing_program(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("c", LABELS)
    api.exec_results.append(
        ExecResult(
            bytes.fromhex(api.fixtures["exec_start_missing_program"]["stream"]),
            api.fixtures["exec_inspect_missing_program"]["body"]["ExitCode"],
        )
    )
    output: list[tuple[str, bytes]] = []
    code = runtime.exec("c", ExecSpec(("nonexistent-program",)), lambda s, d: output.append((s, d)))
    assert code in (126, 127)  # Docker says 126, Podman 127
    assert b"nonexistent-program" in b"".join(data for _, data in output)


def test_exec_reassembles_many_frames_in_order(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("c", LABELS)
    big = bytes(range(256)) * 300  # larger than one read
    stream = frame(1, b"one ") + frame(2, b"warn") + frame(1, big) + frame(1, b"") + frame(1, b" two")
    api.exec_results.append(ExecResult(stream, 0))
    output: list[tuple[str, bytes]] = []
    assert runtime.exec("c", ExecSpec(("x",)), lambda s, d: output.append((s, d))) == 0
    assert b"".join(d for s, d in output if s == "stdout") == b"one " + big + b" two"
    assert b"".join(d for s, d in output if s == "stderr") == b"warn"


def test_exec_without_a_listener_still_waits_for_the_end(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("c", LABELS)
    api.exec_results.append(ExecResult(frame(1, b"ignored"), 0))
    assert runtime.exec("c", ExecSpec(("true",))) == 0


def test_exec_with_a_timeout_runs_under_timeout_and_the_host_stops_waiting(
    api: FakeEngineAPI, runtime: EngineRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the container, coreutils' timeout kills the command; should anything keep its output open
    past that (the agent can kill a process of its own uid), the host gives up a grace period later."""
    monkeypatch.setattr(engine_module, "EXEC_GRACE_SECONDS", 0.1)
    api.add_container("c", LABELS)
    gated = api.dialect == "podman"
    held = Hijack(frame(1, b"started\n"), read_stdin=gated, hold_seconds=2)
    api.answer("POST", r"/exec/[^/]+/start", held)
    output: list[bytes] = []
    began = time.monotonic()
    with pytest.raises(ExecTimedOut, match=r"bash in c ran past its limit of 0.3 s") as caught:
        runtime.exec("c", ExecSpec(("bash", "-c", "x"), timeout=0.3), lambda _s, d: output.append(d))
    assert time.monotonic() - began < 1.5
    assert (caught.value.program, caught.value.seconds) == ("bash", 0.3)
    assert output == [b"started\n"]
    body = api.last("POST", "/containers/c/exec").json()
    timed = ["timeout", "-s", "KILL", "0.3", "bash", "-c", "x"]
    assert body["Cmd"] == ([*PODMAN_EXEC_GATE, *timed] if gated else timed)
    api.hijacks_done.acquire(timeout=5)


def test_an_exec_killed_by_its_timeout_is_a_timeout(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("c", LABELS)
    api.exec_results.append(ExecResult(frame(2, b"partial"), 137))
    api.answer(
        "POST",
        r"/exec/[^/]+/start",
        Hijack(frame(2, b"partial"), read_stdin=api.dialect == "podman", hold_seconds=0.25),
    )
    with pytest.raises(ExecTimedOut):
        runtime.exec("c", ExecSpec(("cat", "/big"), timeout=0.2))
    api.hijacks_done.acquire(timeout=5)
    api.exec_results.append(ExecResult(b"", 1))
    assert runtime.exec("c", ExecSpec(("false",), timeout=30)) == 1  # failing in time is no timeout


def test_exec_timeouts_are_only_for_waited_for_commands() -> None:
    for bad in ({"tty": True}, {"detach": True}):
        with pytest.raises(ValueError, match="timeout"):
            ExecSpec(("x",), timeout=1, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        ExecSpec(("x",), timeout=0)


def test_exec_with_input_feeds_stdin_then_eof(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("c", LABELS)
    api.exec_results.append(ExecResult(frame(1, b"stored\n") + frame(2, b"note\n"), 5))
    chunks: list[bytes] = []
    code = runtime.exec(
        "c", ExecSpec(("tee", "/run/secret"), user="0", stdin=b"value\n"), lambda _s, d: chunks.append(d)
    )
    assert (code, b"".join(chunks)) == (5, b"stored\nnote\n")
    body = api.last("POST", "/containers/c/exec").json()
    assert (body["AttachStdin"], body["Tty"], body["User"]) == (True, False, "0")
    assert api.last("POST", "/exec/.*/start").stdin == b"value\n"


def test_exec_detached_does_not_wait(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("c", LABELS)
    assert (
        runtime.exec(
            "c", ExecSpec(("tmux", "new", "-d"), user="agent", environment={"TERM": "xterm"}, detach=True)
        )
        == 0
    )
    assert api.last("POST", "/exec/.*/start").json() == {"Tty": False, "Detach": True}
    body = api.last("POST", "/containers/c/exec").json()
    assert (body["Cmd"], body["User"], body["Env"]) == (["tmux", "new", "-d"], "agent", ["TERM=xterm"])


class _Fd:
    """Stands in for sys.stdin or sys.stdout: the terminal the user would have."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def type_once_raw(master: int, slave: int, data: bytes) -> threading.Thread:
    """Type ``data`` once the terminal is in raw mode (going raw flushes what was typed before)."""

    def run() -> None:
        deadline = time.monotonic() + 5
        while termios.tcgetattr(slave)[3] & termios.ICANON and time.monotonic() < deadline:
            time.sleep(0.005)
        os.write(master, data)

    typist = threading.Thread(target=run)
    typist.start()
    return typist


def test_exec_tty_connects_the_terminal(
    api: FakeEngineAPI, runtime: EngineRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.add_container("c", LABELS)
    api.exec_results.append(ExecResult(b"\x1b[1mhello\x1b[0m", 7))
    in_master, in_slave = pty.openpty()
    out_master, out_slave = pty.openpty()
    try:
        before = termios.tcgetattr(in_slave)
        typist = type_once_raw(in_master, in_slave, b"q")
        monkeypatch.setattr(sys, "stdin", _Fd(in_slave))
        monkeypatch.setattr(sys, "stdout", _Fd(out_slave))
        monkeypatch.setenv("LINES", "33")
        monkeypatch.setenv("COLUMNS", "101")
        code = runtime.exec("c", ExecSpec(("bash", "-l"), user="agent", workdir="/workspace", tty=True))
        monkeypatch.undo()
        typist.join()
        assert code == 7
        assert termios.tcgetattr(in_slave) == before  # the terminal is back as it was
        assert os.read(out_master, 1024) == b"\x1b[1mhello\x1b[0m"
    finally:
        for fd in (in_master, in_slave, out_master, out_slave):
            os.close(fd)
    body = api.last("POST", "/containers/c/exec").json()
    assert (body["Tty"], body["AttachStdin"], body["User"], body["WorkingDir"]) == (
        True,
        True,
        "agent",
        "/workspace",
    )
    assert api.last("POST", "/exec/.*/start").stdin == b"q"
    resize = api.last("POST", "/exec/.*/resize")
    assert (resize.param("h"), resize.param("w")) == ("33", "101")


# Volumes and networks.


def test_volumes(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    created = runtime.create_volume(
        "containai-s1-work", labels=LABELS, driver_opts={"type": "tmpfs", "device": "tmpfs"}
    )
    assert (created.name, created.labels, created.driver) == ("containai-s1-work", LABELS, "local")
    assert created.options == {"type": "tmpfs", "device": "tmpfs"}
    body = api.last("POST", "/volumes/create").json()
    assert body == {
        "Name": "containai-s1-work",
        "Driver": "local",
        "DriverOpts": {"type": "tmpfs", "device": "tmpfs"},
        "Labels": LABELS,
    }
    runtime.create_volume("other", labels={"ai.containai.session": "s2"})
    assert [v.name for v in runtime.volumes({"ai.containai.session": "s1"})] == ["containai-s1-work"]
    assert api.last("GET", "/volumes").filters == {"label": ["ai.containai.session=s1"]}
    runtime.remove_volume("containai-s1-work")
    assert api.last("DELETE", "/volumes/containai-s1-work")  # docker-py 7 drops its own force=True
    runtime.remove_volume("containai-s1-work")  # gone already: quiet
    assert runtime.volumes({"ai.containai.session": "s1"}) == []


def test_remove_of_a_missing_volume_answered_404_is_quiet(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.answer("DELETE", "/volumes/.*", Reply(404, {"message": "no such volume"}))
    runtime.remove_volume("gone")


def test_networks(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    created = runtime.create_network("containai-s1-net", labels=LABELS, internal=True)
    assert (created.name, created.labels) == ("containai-s1-net", LABELS)
    body = api.last("POST", "/networks/create").json()
    assert body["Name"] == "containai-s1-net"
    assert (body["Driver"], body["Internal"], body["Labels"]) == ("bridge", True, LABELS)
    assert body.get("EnableIPv6", False) is False
    assert body["CheckDuplicate"] is True
    with pytest.raises(EngineAPIError, match=r"create network containai-s1-net: .*already"):
        runtime.create_network("containai-s1-net", labels=LABELS)
    runtime.create_network("containai-s2-net", labels={"ai.containai.session": "s2"})
    listed = runtime.networks({"ai.containai.owner": "dev"})
    assert [(n.name, n.labels) for n in listed] == [("containai-s1-net", LABELS)]
    assert api.last("GET", "/networks").filters == {"label": ["ai.containai.owner=dev"]}
    runtime.remove_network("containai-s1-net")
    runtime.remove_network("containai-s1-net")  # gone already: quiet
    assert runtime.networks({"ai.containai.owner": "dev"}) == []


# Files and standard input.


def test_read_tail(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("c", LABELS)
    api.files["c", "/run/containai/audit.json"] = b'{"ok": true}\n'
    tail = runtime.read_tail("c", "/run/containai/audit.json", max_bytes=100)
    assert tail is not None and (tail.data, tail.size, tail.dropped) == (b'{"ok": true}\n', 13, 0)
    assert api.last("GET", "/containers/c/archive").param("path") == "/run/containai/audit.json"
    assert runtime.read_tail("c", "/no/such/file", max_bytes=100) is None
    assert runtime.read_tail("gone", "/etc/hostname", max_bytes=100) is None


def test_read_tail_keeps_only_the_end_of_a_large_file(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    """Streamed: a file of many megabytes is read whole, but no more than the tail is kept."""
    api.add_container("c", LABELS)
    huge = b"".join(b"%08d\n" % n for n in range(500_000))  # 4.5 MB
    api.files["c", "/huge"] = huge
    tail = runtime.read_tail("c", "/huge", max_bytes=1000)
    assert tail is not None and tail.data == huge[-1000:] and tail.size == len(huge)
    assert tail.dropped == len(huge) - 1000
    empty = runtime.read_tail("c", "/huge", max_bytes=0)
    assert empty is not None and (empty.data, empty.size) == (b"", len(huge))
    collect_abandoned_sockets()


def test_read_tail_of_a_directory_is_none(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("c", LABELS)
    api.answer("GET", "/containers/c/archive", Reply(200, _tar_with_only_a_directory()))
    assert runtime.read_tail("c", "/etc", max_bytes=100) is None


def _tar_with_only_a_directory() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("etc")
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    return buffer.getvalue()


def test_a_fed_start_hands_the_value_over_then_closes(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    container_id = api.add_container("gateway", LABELS, status="created")
    feed = runtime.start_fed("gateway")
    feed.send(b"sk-secret-value\n")
    feed.close()
    assert api.hijacks_done.acquire(timeout=5), (
        "the attach was never closed: the container's stdin stays open"
    )
    attach = api.last("POST", "/containers/gateway/attach")
    assert (attach.param("stdin"), attach.param("stream")) == ("1", "1")
    assert "stdout" not in attach.query
    assert attach.stdin == b"sk-secret-value\n"
    assert api.containers[container_id]["State"]["Status"] == "running"
    paths = [(r.method, r.path) for r in api.requests if r.path.startswith("/containers/gateway")]
    assert paths.index(("POST", "/containers/gateway/attach")) < paths.index(
        ("POST", "/containers/gateway/start")
    )


def test_a_fed_start_keeps_stdin_open(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    api.add_container("gateway", LABELS, status="created")
    feed = runtime.start_fed("gateway")
    feed.send(b"token-1\n")
    feed.send(b"token-2\n")
    assert not api.hijacks_done.acquire(timeout=0.05)  # still open between sends
    feed.close()
    feed.close()
    assert api.hijacks_done.acquire(timeout=5)
    assert api.last("POST", "/containers/gateway/attach").stdin == b"token-1\ntoken-2\n"
    assert api.last("POST", "/containers/gateway/start")


def test_a_podman_that_cannot_read_the_filter_says_why(api: FakeEngineAPI, runtime: EngineRuntime) -> None:
    if api.dialect != "podman":
        pytest.skip("Docker is handed the filter inline")
    refusal = "container create: opening seccomp profile failed: open /x.json: no such file or directory"
    api.answer("POST", "/containers/create", Reply(500, {"message": refusal}))
    with pytest.raises(EngineAPIError, match="seccomp profile") as caught:
        runtime.create_container(spec())
    assert caught.value.hint is not None
    assert str(runtime.seccomp_folder) in caught.value.hint
