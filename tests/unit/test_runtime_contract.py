"""What every ``ContainerRuntime`` does alike: ``FakeRuntime``, and ``EngineRuntime`` on Docker's and
Podman's recorded answers. Then the fake's own bookkeeping, which unit tests elsewhere rely on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from containai.errors import EngineAPIError, EngineUnavailable
from containai.runtime.base import BuildEvent, BuildSpec, ContainerRuntime, ContainerSpec, ExecSpec
from containai.runtime.engine import EngineRuntime
from containai.runtime.fake import FAKE_ENGINE, BuildCall, ExecCall, FakeRuntime, ImportCall
from containai.runtime.select import EngineChoice

from .engine_api import DIALECTS, FakeEngineAPI

SESSION = {"ai.containai.session": "s1", "ai.containai.owner": "dev"}
OTHER = {"ai.containai.session": "s2", "ai.containai.owner": "dev"}


@pytest.fixture(params=["fake", *DIALECTS])
def runtime(request: pytest.FixtureRequest) -> Iterator[ContainerRuntime]:
    if request.param == "fake":
        yield FakeRuntime()
        return
    with (
        tempfile.TemporaryDirectory(prefix="cai-engine-") as folder,
        FakeEngineAPI(request.param, Path(folder) / "engine.sock") as api,
    ):
        engine = EngineRuntime(EngineChoice(api.base_url, None, "test socket"))
        try:
            yield engine
        finally:
            engine.close()


def spec(name: str, labels: dict[str, str]) -> ContainerSpec:
    return ContainerSpec(image="containai-base:dev", name=name, command=("sleep", "infinity"), labels=labels)


def test_container_lifecycle(runtime: ContainerRuntime) -> None:
    created = runtime.create_container(spec("containai-s1-agent", SESSION))
    assert (created.name, created.status, dict(created.labels)) == ("containai-s1-agent", "created", SESSION)
    assert not created.running
    runtime.start(created.name)
    found = runtime.container(created.name)
    assert found is not None
    assert found.running
    assert runtime.container(created.id) is not None
    runtime.stop(created.name)
    stopped = runtime.container(created.name)
    assert stopped is not None
    assert not stopped.running
    runtime.remove_container(created.name)
    assert runtime.container(created.name) is None
    runtime.remove_container(created.name)  # gone already: quiet
    runtime.stop(created.name)


def test_containers_are_found_by_labels(runtime: ContainerRuntime) -> None:
    runtime.create_container(spec("containai-s1-agent", SESSION))
    runtime.create_container(spec("containai-s1-proxy", {**SESSION, "ai.containai.role": "proxy"}))
    runtime.create_container(spec("containai-s2-agent", OTHER))
    assert sorted(c.name for c in runtime.containers({"ai.containai.session": "s1"})) == [
        "containai-s1-agent",
        "containai-s1-proxy",
    ]
    assert [c.name for c in runtime.containers({"ai.containai.role": ""})] == ["containai-s1-proxy"]
    assert len(runtime.containers({"ai.containai.owner": "dev"})) == 3
    assert runtime.containers({"ai.containai.session": "s9"}) == []


def test_a_name_in_use_is_refused(runtime: ContainerRuntime) -> None:
    runtime.create_container(spec("containai-s1-agent", SESSION))
    with pytest.raises(EngineAPIError, match="create container containai-s1-agent"):
        runtime.create_container(spec("containai-s1-agent", OTHER))


def test_starting_a_missing_container_is_refused(runtime: ContainerRuntime) -> None:
    with pytest.raises(EngineAPIError):
        runtime.start("containai-gone")


def test_volumes(runtime: ContainerRuntime) -> None:
    made = runtime.create_volume("containai-s1-work", labels=SESSION, driver_opts={"type": "tmpfs"})
    assert (made.name, dict(made.labels), made.driver, dict(made.options)) == (
        "containai-s1-work",
        SESSION,
        "local",
        {"type": "tmpfs"},
    )
    runtime.create_volume("containai-s2-work", labels=OTHER)
    assert [v.name for v in runtime.volumes({"ai.containai.session": "s1"})] == ["containai-s1-work"]
    runtime.remove_volume("containai-s1-work")
    runtime.remove_volume("containai-s1-work")
    assert runtime.volumes({"ai.containai.session": "s1"}) == []


def test_networks(runtime: ContainerRuntime) -> None:
    made = runtime.create_network("containai-s1-net", labels=SESSION, internal=True)
    assert (made.name, dict(made.labels)) == ("containai-s1-net", SESSION)
    runtime.create_network("containai-s2-net", labels=OTHER)
    assert [n.name for n in runtime.networks({"ai.containai.session": "s1"})] == ["containai-s1-net"]
    runtime.remove_network("containai-s1-net")
    runtime.remove_network("containai-s1-net")
    assert runtime.networks({"ai.containai.session": "s1"}) == []


def test_reading_a_file_that_is_not_there(runtime: ContainerRuntime) -> None:
    runtime.create_container(spec("containai-s1-agent", SESSION))
    assert runtime.read_tail("containai-s1-agent", "/no/such/file", max_bytes=100) is None


def test_images_missing_and_close(runtime: ContainerRuntime) -> None:
    assert runtime.image("containai-nothing:dev") is None
    runtime.close()
    runtime.close()


# The fake's own bookkeeping.


def test_fake_records_execs_and_answers_with_the_scripted_code() -> None:
    fake = FakeRuntime(exec_exit_code=4)
    fake.add_image("img")
    fake.create_container(ContainerSpec(image="img", name="c", command=(), labels={}))
    with pytest.raises(EngineAPIError, match="not running"):  # as an engine: no exec in a stopped container
        fake.exec("c", ExecSpec(("true",)))
    fake.start("c")
    fake.execs.clear()
    assert (
        fake.exec("c", ExecSpec(("git", "status"), user="agent", environment={"A": "1"}, workdir="/w")) == 4
    )
    assert fake.exec("c", ExecSpec(("bash",), user="agent", tty=True)) == 4
    assert fake.exec("c", ExecSpec(("tmux",), environment={"TERM": "xterm"}, detach=True)) == 0
    assert fake.exec("c", ExecSpec(("tee", "/x"), user="0", stdin=b"secret")) == 4
    assert fake.execs == [
        ExecCall("c", ("git", "status"), "agent", {"A": "1"}, "/w"),
        ExecCall("c", ("bash",), "agent", {}, "", tty=True),
        ExecCall("c", ("tmux",), "", {"TERM": "xterm"}, detach=True),
        ExecCall("c", ("tee", "/x"), "0"),
    ]
    assert fake.inputs == [("c", b"secret")]


def test_fake_stdin_hand_over_and_feed() -> None:
    fake = FakeRuntime()
    fake.create_container(spec("gateway", SESSION))
    feed = fake.start_fed("gateway")
    assert fake.containers(SESSION)[0].running
    feed.send(b"key\n")
    feed.send(b"token-1\n")
    feed.close()
    assert fake.inputs == [("gateway", b"key\n"), ("gateway", b"token-1\n")]
    assert getattr(feed, "closed", None) is True


def test_fake_keeps_specs_files_and_networks() -> None:
    fake = FakeRuntime()
    created = fake.create_container(spec("c", SESSION))
    assert fake.specs[created.id].name == "c"
    fake.files["c", "/etc/hostname"] = b"agent\n"
    tail = fake.read_tail("c", "/etc/hostname", max_bytes=3)
    assert tail is not None and (tail.data, tail.size, tail.dropped) == (b"nt\n", 6, 3)
    fake.add_network("containai-s1-net", SESSION)
    assert [n.name for n in fake.networks(SESSION)] == ["containai-s1-net"]
    fake.remove_container(created.id)
    assert created.id not in fake.specs


def test_fake_engine_can_be_unavailable() -> None:
    with pytest.raises(EngineUnavailable) as caught:
        FakeRuntime(unavailable=True).info()
    assert caught.value.hint is not None
    assert FakeRuntime().info() == FAKE_ENGINE


def test_fake_images_pull_build_and_import(tmp_path: Path) -> None:
    fake = FakeRuntime(pullable=["debian:bookworm-slim"])
    assert fake.pull("debian:bookworm-slim").tags == ("debian:bookworm-slim",)
    with pytest.raises(EngineAPIError, match="refused to pull x:y"):
        fake.pull("x:y")
    assert fake.pulls == ["debian:bookworm-slim", "x:y"]

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    events: list[BuildEvent] = []
    fake.build(BuildSpec(tmp_path, "t:dev", {"A": "1"}, {"l": "1"}), events.append)
    assert not any(e.cached for e in events)
    fake.build(BuildSpec(tmp_path, "t:dev", {"A": "1"}, {"l": "1"}), events.append)
    assert events[-1].cached  # same labels again: the layer cache answers
    assert fake.builds[0] == BuildCall(
        "t:dev",
        {"A": "1"},
        {"l": "1"},
        {"Dockerfile": b"FROM scratch\n", "run.sh": b"#!/bin/sh\n"},
        frozenset({"run.sh"}),
    )

    imported = fake.import_rootfs(tmp_path / "rootfs.tar", tag="d:1", labels={"p": "b"}, changes=["CMD x"])
    assert imported.labels == {"p": "b"}
    assert fake.imports == [ImportCall(tmp_path / "rootfs.tar", "d:1", {"p": "b"}, ("CMD x",))]
    assert fake.image("d:1") == imported
