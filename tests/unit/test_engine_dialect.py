"""The Engine API dialects: what ContainAI asks Docker and Podman for, and how it reads their answers."""

from __future__ import annotations

from pathlib import Path

from containai.runtime.base import ContainerSpec
from containai.runtime.engine import (
    TMPFS_OF,
    create_request,
    engine_kind,
    has_labels,
    parse_container_info,
)

FOLDER = Path("/state/seccomp")  # where Podman is pointed to the syscall filter
SPEC = ContainerSpec(
    image="containai-shell:dev",
    name="shell-x",
    command=("sleep", "infinity"),
    labels={"ai.containai.session": "s1"},
    user="1001:1002",
    tmpfs={
        "/tmp": "rw,noexec,nosuid,nodev,size=1g",
        "/home/agent": "rw,noexec,nosuid,nodev,size=512m,uid=1001,gid=1002,mode=0700",
        "/run/containai": "rw,noexec,nosuid,nodev,size=1m,mode=0755",
        "/run/containai/mcp": "rw,noexec,nosuid,nodev,size=512m,uid=65531,gid=65531,mode=0711",
    },
    ulimits=(("nofile", 4096, 8192), ("core", 0, 0)),
)


def _ulimits(kwargs: object) -> dict[str, tuple[int, int]]:
    assert isinstance(kwargs, list)
    return {u["Name"]: (u["Soft"], u["Hard"]) for u in kwargs}


def test_docker_gets_the_tmpfs_options_as_written() -> None:
    request = create_request(SPEC, "docker")
    assert request.kwargs["tmpfs"] == SPEC.tmpfs  # and nothing else: Docker adds no writable folders
    assert request.volumes == ()
    assert "volumes" not in request.kwargs
    assert _ulimits(request.kwargs["ulimits"]) == {"nofile": (4096, 8192), "core": (0, 0)}


def test_podman_mounts_the_users_own_tmpfs_with_U_and_nothing_copied_up() -> None:
    tmpfs = create_request(SPEC, "podman", seccomp_folder=FOLDER).kwargs["tmpfs"]
    assert tmpfs["/home/agent"] == "rw,noexec,nosuid,nodev,size=512m,mode=0700,U,notmpcopyup"
    assert tmpfs["/tmp"] == "rw,noexec,nosuid,nodev,size=1g,notmpcopyup"
    assert tmpfs["/run/containai"] == "rw,noexec,nosuid,nodev,size=1m,mode=0755,notmpcopyup"
    assert not any("uid=" in options or "gid=" in options for options in tmpfs.values())


def test_podman_closes_the_writable_folders_it_would_add_to_a_read_only_container() -> None:
    spec = ContainerSpec(image="i", name="n", command=(), labels={}, tmpfs={"/tmp": "rw,size=1m"})
    tmpfs = create_request(spec, "podman", seccomp_folder=FOLDER).kwargs["tmpfs"]
    assert tmpfs["/tmp"] == "rw,size=1m,notmpcopyup"  # the spec's own wins
    assert tmpfs["/var/tmp"].startswith("ro,noexec,nosuid,nodev,")
    assert tmpfs["/run"].startswith("rw,noexec,nosuid,nodev,") and "mode=0755" in tmpfs["/run"]
    writable = ContainerSpec(image="i", name="n", command=(), labels={}, read_only=False)
    assert create_request(writable, "podman", seccomp_folder=FOLDER).kwargs["tmpfs"] == {}


def test_podman_gets_a_tmpfs_owned_by_another_uid_as_a_tmpfs_volume() -> None:
    request = create_request(SPEC, "podman", seccomp_folder=FOLDER)
    assert "/run/containai/mcp" not in request.kwargs["tmpfs"]
    (volume,) = request.volumes
    assert volume.name == "shell-x-tmpfs-run-containai-mcp"
    assert volume.target == "/run/containai/mcp"
    assert volume.driver_opts == {
        "type": "tmpfs",
        "device": "tmpfs",
        # size= would be read as an XFS quota by Podman; nr_blocks (4 KiB pages) is tmpfs's own.
        "o": "noexec,nosuid,nodev,nr_blocks=131072,uid=65531,gid=65531,mode=0711",
    }
    assert request.kwargs["volumes"] == {
        "shell-x-tmpfs-run-containai-mcp": {"bind": "/run/containai/mcp", "mode": "rw,noexec,nosuid,nodev"}
    }
    assert TMPFS_OF.startswith("ai.containai.")


def test_podman_without_a_numeric_user_gets_volumes_for_every_owned_tmpfs() -> None:
    spec = ContainerSpec(
        image="i",
        name="n",
        command=(),
        labels={},
        user="agent",
        tmpfs={"/home/agent": "size=1m,uid=1000,gid=1000"},
    )
    request = create_request(spec, "podman", seccomp_folder=FOLDER)
    assert [v.target for v in request.volumes] == ["/home/agent"]
    assert request.kwargs["volumes"] == {"n-tmpfs-home-agent": {"bind": "/home/agent", "mode": "rw"}}
    assert request.volumes[0].driver_opts["o"] == "nr_blocks=256,uid=1000,gid=1000"


def test_podman_gets_explicit_nofile_and_nproc_limits() -> None:
    limits = _ulimits(create_request(SPEC, "podman", seccomp_folder=FOLDER).kwargs["ulimits"])
    assert limits == {"nofile": (4096, 8192), "core": (0, 0), "nproc": (4096, 4096)}
    spec = ContainerSpec(image="i", name="n", command=(), labels={}, ulimits=(("nproc", 64, 64),))
    assert _ulimits(create_request(spec, "podman", seccomp_folder=FOLDER).kwargs["ulimits"]) == {
        "nproc": (64, 64),
        "nofile": (4096, 8192),
    }


def test_engine_kind_from_the_version_components() -> None:
    assert engine_kind({"Components": [{"Name": "Podman Engine"}]}) == "podman"
    assert engine_kind({"Components": [{"Name": "Engine"}, {"Name": "runc"}]}) == "docker"
    assert engine_kind({}) == "docker"


def test_container_info_is_parsed_once_with_user_and_exit_code() -> None:
    running = parse_container_info(
        {
            "Id": "abc",
            "Name": "/shell-x",
            "Config": {"Image": "img", "User": "1000:1000", "Labels": {"a": "b"}},
            "State": {"Status": "running", "ExitCode": 0},
        }
    )
    assert (running.id, running.name, running.user, running.exit_code) == (
        "abc",
        "shell-x",
        "1000:1000",
        None,
    )
    assert running.running and running.labels == {"a": "b"}
    # Podman's word for it is "stopped"; what the rest of ContainAI hears is Docker's.
    stopped = parse_container_info({"Id": "d", "Name": "p", "State": {"Status": "stopped", "ExitCode": 137}})
    assert (stopped.status, stopped.exit_code, stopped.user) == ("exited", 137, "")
    bare = parse_container_info({})
    assert (bare.status, bare.exit_code, bare.labels) == ("", None, {})


def test_label_scopes_hold_every_label_as_docker_does() -> None:
    have = {"ai.containai.session": "s1", "containai-test.run": "r1"}
    assert has_labels(have, {"ai.containai.session": "", "containai-test.run": "r1"})
    assert not has_labels(have, {"ai.containai.session": "", "containai-test.run": "r2"})
    assert not has_labels(have, {"other": ""})
    assert has_labels(have, {})


def test_podman_containers_get_no_ipv6_as_dockers_do() -> None:
    assert create_request(SPEC, "podman", seccomp_folder=FOLDER).kwargs["sysctls"] == {
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
    }
    assert "sysctls" not in create_request(SPEC, "docker").kwargs


def test_podman_runs_the_command_itself_when_the_entrypoint_is_cleared() -> None:
    spec = ContainerSpec(image="i", name="n", command=("gateway", "--listen", "x"), labels={}, entrypoint=())
    podman = create_request(spec, "podman", seccomp_folder=FOLDER).kwargs
    assert (podman["entrypoint"], podman["command"]) == (["gateway"], ["--listen", "x"])
    docker_kwargs = create_request(spec, "docker").kwargs
    assert (docker_kwargs["entrypoint"], docker_kwargs["command"]) == ([], ["gateway", "--listen", "x"])
