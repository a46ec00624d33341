"""ContainAI's own syscall filter, and how each engine is handed it.

``seccomp.json`` (package data) has the shape of the engines' default profiles (refuse by default,
allow by name, an arch map) without what an agent never needs: tracing other processes (ptrace,
process_vm_*), new namespaces and mounts (unshare, setns, clone with CLONE_NEW*, mount, pivot_root,
chroot), the kernel keyring, io_uring, bpf, perf events, userfaultfd, file handles, modules, kexec,
swap, reboot and the clocks. Every session container (the agent and its sidecars) runs under it;
nothing a user sets turns it off.

Docker takes the profile's JSON inline (``seccomp=<json>``); Podman's compatible API reads a path
(``seccomp=<file>``), so for Podman the profile is written once under the state folder, named by
its digest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from containai.errors import EngineError

PROFILE_RESOURCE = "seccomp.json"
SECCOMP_FOLDER = "seccomp"  # under ContainAI's state folder: the profile's file, for Podman


@dataclass(frozen=True)
class SeccompProfile:
    """A syscall filter in the engines' JSON format, parsed once to check its shape."""

    text: str

    def __post_init__(self) -> None:
        document = self.document
        if not isinstance(document, dict) or not isinstance(document.get("syscalls"), list):
            raise ValueError("a seccomp profile is a JSON object with a list of syscalls")

    def __repr__(self) -> str:  # the whole text would drown any log line or failed assertion
        return f"SeccompProfile(sha={self.sha[:12]})"

    @property
    def document(self) -> Any:
        return json.loads(self.text)

    @property
    def compact(self) -> str:
        """The profile as one line of JSON: what Docker is handed inline."""
        return json.dumps(self.document, separators=(",", ":"), sort_keys=True)

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.compact.encode()).hexdigest()

    @property
    def file_name(self) -> str:
        return f"containai-{self.sha[:16]}.json"

    def allowed(self) -> frozenset[str]:
        """Every syscall some rule allows (with or without a condition on its arguments)."""
        return frozenset(
            name
            for rule in self.document["syscalls"]
            if rule.get("action") == "SCMP_ACT_ALLOW"
            for name in rule.get("names", ())
        )


@functools.cache
def containai_profile() -> SeccompProfile:
    """The profile shipped in the package."""
    return SeccompProfile(resources.files(__package__).joinpath(PROFILE_RESOURCE).read_text("utf-8"))


def security_option(profile: SeccompProfile, *, inline: bool, folder: Path | None = None) -> str:
    """The ``security_opt`` entry for a profile: inline JSON, or the path of its file in ``folder``."""
    if inline:
        return f"seccomp={profile.compact}"
    if folder is None:
        raise ValueError("the profile's file needs a folder")
    return f"seccomp={folder / profile.file_name}"


def write_profile(profile: SeccompProfile, folder: Path) -> Path:
    """The profile's file in ``folder`` (0644, named by its digest), written when it is not there yet."""
    target = folder / profile.file_name
    if target.is_file() and target.read_text("utf-8") == profile.compact:
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a launcher beside us never reads a half-written profile.
        handle, name = tempfile.mkstemp(dir=folder, prefix=".seccomp-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(profile.compact)
        temporary = Path(name)
        temporary.chmod(0o644)  # the engine's service reads it, maybe as another user
        temporary.replace(target)
    except OSError as exc:
        raise EngineError(
            f"cannot write the syscall filter's file {target}: {exc.strerror}",
            hint=f"make {folder} writable (it is under ContainAI's state folder; CONTAINAI_HOME moves it)",
        ) from exc
    return target


def require_seccomp(kind: str, version: str, security_options: Sequence[str]) -> None:
    """Refuse an engine that runs containers without a syscall filter."""
    if not any("seccomp" in option for option in security_options):
        raise EngineError(
            f"{kind} {version} reports no seccomp support, so a session would run without its syscall filter",
            hint="use an engine built with seccomp (Debian's docker.io and podman packages are); "
            "`containai doctor` checks it",
        )
