"""ContainAI's syscall filter: the shipped profile, how each engine is handed it, and that every
container a session plans carries it. That the engines enforce it: tests/engine/test_seccomp.py."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from containai.errors import EngineError
from containai.runtime.base import ContainerSpec
from containai.runtime.engine import create_request
from containai.runtime.fake import FAKE_ENGINE, FakeRuntime
from containai.runtime.seccomp import SeccompProfile, containai_profile, write_profile
from containai.secrets.value import Secret
from containai.session.testing import fake_ports
from tests.unit.test_session_manager import REPO, request

# What an agent never needs, and the issue names (with "the like"): none may be allowed by any rule.
REMOVED = [
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "userfaultfd",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "kexec_load",
    "kexec_file_load",
    "mount",
    "umount",
    "umount2",
    "unshare",
    "setns",
    "open_by_handle_at",
    "name_to_handle_at",
    "pivot_root",
    "chroot",
    "swapon",
    "swapoff",
    "reboot",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "fanotify_init",
    "fanotify_mark",
    "clone3",
    "kcmp",
    "pidfd_getfd",
    "syslog",
    "iopl",
    "ioperm",
    "vhangup",
    "sethostname",
    "setdomainname",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "modify_ldt",
    "mbind",
    "set_mempolicy",
    "migrate_pages",
    "move_pages",
]
ORDINARY = [
    "read",
    "write",
    "openat",
    "execve",
    "wait4",
    "socket",
    "connect",
    "futex",
    "mmap",
    "pipe2",
    "epoll_wait",
    "statx",
    "getrandom",
]
CLONE_NEW = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET


def rules(name: str) -> list[dict[str, object]]:
    return [r for r in containai_profile().document["syscalls"] if name in r["names"]]


def test_the_profile_ships_in_the_package_and_parses() -> None:
    document = containai_profile().document
    assert document["defaultAction"] == "SCMP_ACT_ERRNO"
    assert document["defaultErrnoRet"] == 1  # EPERM
    assert {a["architecture"] for a in document["archMap"]} == {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"}
    actions = {r["action"] for r in document["syscalls"]}
    assert actions <= {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"}


def test_no_rule_allows_a_removed_syscall() -> None:
    allowed = containai_profile().allowed()
    assert sorted(set(REMOVED) & allowed) == []
    assert set(ORDINARY) <= allowed


def test_clone_is_allowed_only_without_namespace_flags_and_clone3_says_enosys() -> None:
    (clone,) = rules("clone")
    assert clone["args"] == [{"index": 0, "value": CLONE_NEW, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = rules("clone3")
    assert (clone3["action"], clone3["errnoRet"]) == (
        "SCMP_ACT_ERRNO",
        38,
    )  # ENOSYS: glibc falls back to clone


def test_personality_allows_only_the_safe_values() -> None:
    values = set()
    for rule in rules("personality"):
        (arg,) = rule["args"]  # type: ignore[misc]
        assert arg["op"] == "SCMP_CMP_EQ"  # type: ignore[index]
        values.add(arg["value"])  # type: ignore[index]
    assert values == {0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF}  # no READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE


def test_a_profile_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="list of syscalls"):
        SeccompProfile('{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert "sha=" in repr(containai_profile())


SPEC = ContainerSpec(image="i", name="c", command=("true",), labels={})


def test_docker_is_handed_the_profile_inline() -> None:
    options = create_request(SPEC, "docker").kwargs["security_opt"]
    assert options[0] == "no-new-privileges:true"
    assert json.loads(options[1].removeprefix("seccomp=")) == containai_profile().document


def test_podman_is_handed_the_file(tmp_path: Path) -> None:
    options = create_request(SPEC, "podman", seccomp_folder=tmp_path).kwargs["security_opt"]
    assert options == ["no-new-privileges:true", f"seccomp={tmp_path / containai_profile().file_name}"]


def test_without_a_profile_the_engine_keeps_its_own() -> None:
    for kind in ("docker", "podman"):
        assert create_request(replace(SPEC, seccomp=None), kind).kwargs["security_opt"] == [
            "no-new-privileges:true"
        ]


def test_the_profiles_file_is_written_once_readable_by_the_engine(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "seccomp"
    path = write_profile(containai_profile(), folder)
    assert json.loads(path.read_text()) == containai_profile().document
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    mtime = path.stat().st_mtime_ns
    assert write_profile(containai_profile(), folder) == path
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in folder.iterdir()] == [path.name]  # nothing left aside


def test_an_unwritable_folder_says_where(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(EngineError, match="syscall filter") as caught:
        write_profile(containai_profile(), blocker / "seccomp")
    assert caught.value.hint and "CONTAINAI_HOME" in caught.value.hint


@pytest.fixture()
def xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))


@pytest.mark.usefixtures("xdg")
def test_every_container_a_session_creates_carries_the_profile() -> None:
    from containai.session.manager import SessionManager

    ports = fake_ports()
    req = request("codex", network_proxy="squid", credential=Secret("sk-test"))
    plan = SessionManager(ports).plan(req, repo=REPO, environ={"XDG_RUNTIME_DIR": "/run/user/1000"})
    assert plan.container.seccomp == containai_profile()
    SessionManager(ports).provision(plan)
    specs = list(ports.runtime.specs.values())
    assert {s.name for s in specs} == {plan.name, f"{plan.name}-proxy", f"{plan.name}-gateway"}
    assert all(s.seccomp == containai_profile() for s in specs)


@pytest.mark.usefixtures("xdg")
def test_an_engine_without_seccomp_is_refused_before_anything() -> None:
    from containai.session.manager import SessionManager

    ports = fake_ports(runtime=FakeRuntime(engine_info=replace(FAKE_ENGINE, security_options=())))
    with pytest.raises(EngineError, match="no seccomp support") as caught:
        SessionManager(ports).plan(request(), repo=REPO, environ={})
    assert caught.value.hint and "doctor" in caught.value.hint
    assert ports.git.branches == {}  # no branch reserved
    assert ports.runtime.specs == {}
