"""The selftest's cases and its report. Pure: the probe's output in, a ``Report`` out.

The probe (probe.sh, run inside the session) prints one line a case: ``id<TAB>held|broke<TAB>detail``.
Whatever it prints is the agent container's word, so it is parsed strictly: a line that is not of
that shape, or names no case of ours, is ignored, and a case the probe did not report is broken
(a probe that cannot run is no proof of anything).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from containai.text import printable

JSON_VERSION = 1


@dataclass(frozen=True)
class Case:
    id: str
    title: str  # the attack, as the agent would try it
    fix: str  # what to change when it broke


CASES: tuple[Case, ...] = (
    Case("non-root", "run as root", "the agent's image or definition sets user 0: run it as a normal user"),
    Case(
        "no-capabilities",
        "use Linux capabilities",
        "the container has capabilities: remove --cap-add and any engine default that adds them",
    ),
    Case(
        "no-new-privileges",
        "gain privileges through setuid or file capabilities",
        "no_new_privs is off: the engine ignored security_opt no-new-privileges; update it",
    ),
    Case(
        "seccomp",
        "call dangerous system calls (seccomp off)",
        "seccomp is off: remove seccomp=unconfined from the engine's defaults (daemon.json, containers.conf)",
    ),
    Case(
        "read-only-root",
        "write to the root filesystem",
        "the root filesystem is writable: the engine ignored read_only; update it",
    ),
    Case(
        "read-only-repo",
        "write to the host repository at /repo",
        "the repository is mounted writable: report this as a ContainAI bug",
    ),
    Case(
        "no-engine-socket",
        "reach the container engine's socket",
        "an engine socket is mounted in: remove it from the agent's definition or the engine's defaults",
    ),
    Case(
        "loopback-only",
        "use a network interface of its own",
        "the container has a network: it must run with network none; check CONTAINAI_RUNTIME's engine",
    ),
    Case(
        "no-direct-tcp",
        "connect straight to an outside address, past the proxy",
        "the container has a route out: it must have no interface but loopback",
    ),
    Case(
        "no-ipv6",
        "connect out over IPv6",
        "the container has an IPv6 route: it must have no interface but loopback",
    ),
    Case(
        "no-dns",
        "resolve names itself (DNS tunnelling)",
        "the container resolves names: it must have no network but loopback",
    ),
    Case(
        "proxy-refuses",
        "reach a domain that is not on the allowlist through the proxy",
        "the proxy let a domain off the allowlist through: check allow_domains in config.toml "
        "(`containai doctor --settings`) for a wildcard",
    ),
    Case(
        "no-secrets-in-env",
        "read secrets from its environment",
        "a secret is in the agent's environment: remove it from the agent's env (its definition) and "
        "store it with `containai secrets set NAME`",
    ),
    Case(
        "tmp-noexec",
        "run a program it wrote to /tmp",
        "/tmp is not noexec: the engine ignored the tmpfs options; update it",  # noqa: S108  # words, not a path
    ),
    Case(
        "home-noexec",
        "run a program it wrote to its home folder",
        "HOME is not noexec: the engine ignored the tmpfs options; update it",
    ),
    Case(
        "pids-limit",
        "fork-bomb the host",
        "no process limit: set pids in config.toml, and run an engine with the pids cgroup controller",
    ),
    Case(
        "memory-limit",
        "exhaust the host's memory",
        "no memory limit: pass --memory or set memory in config.toml, and enable the memory controller",
    ),
    Case(
        "no-core-dumps",
        "dump its memory to disk",
        "core dumps are on: the engine ignored the core ulimit; update it",
    ),
    Case(
        "kernel-memory",
        "read kernel or physical memory (/proc/kcore, /dev/mem)",
        "kernel memory is readable: the container is privileged; remove --privileged and device mounts",
    ),
    Case(
        "setuid",
        "escalate through a setuid program",
        "setuid programs run privileged: no_new_privs must be on (see no-new-privileges)",
    ),
    Case(
        "own-hostname",
        "learn the host's name",
        "the container has the host's UTS namespace: remove --uts host from the engine's defaults",
    ),
    Case(
        "own-processes",
        "see (and signal) processes outside the session",
        "the container shares a PID namespace: remove --pid host from the engine's defaults",
    ),
)
_BY_ID = {case.id: case for case in CASES}


@dataclass(frozen=True)
class Result:
    case: Case
    held: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.case.id,
            "title": self.case.title,
            "status": "held" if self.held else "broke",
            "detail": self.detail,
            "fix": None if self.held else self.case.fix,
        }


@dataclass(frozen=True)
class Report:
    results: tuple[Result, ...]
    seconds: float = 0.0  # how long the whole run took, session set-up and removal included

    @property
    def broke(self) -> tuple[Result, ...]:
        return tuple(r for r in self.results if not r.held)

    @property
    def ok(self) -> bool:
        return not self.broke

    def to_json(self) -> dict[str, Any]:
        held = len(self.results) - len(self.broke)
        return {
            "version": JSON_VERSION,
            "cases": [r.to_json() for r in self.results],
            "held": held,
            "broke": len(self.broke),
            "seconds": round(self.seconds, 1),
        }


def parse_probe_output(text: str, cases: Sequence[Case] = CASES) -> tuple[Result, ...]:
    """The probe's lines as results, in the order of ``cases``; a case it did not report broke."""
    seen: dict[str, Result] = {}
    for line in text.splitlines():
        fields = line.split("\t", 2)
        if len(fields) != 3 or fields[1] not in ("held", "broke"):
            continue
        case = _BY_ID.get(fields[0])
        if case is None or case.id in seen:  # the first word on a case stands
            continue
        seen[case.id] = Result(case, fields[1] == "held", printable(fields[2].strip(), limit=200))
    return tuple(
        seen.get(case.id) or Result(case, held=False, detail="the probe did not report this case")
        for case in cases
    )
