"""Memory of a session's containers (the engine's stats: cgroup usage less inactive file cache, as
`docker stats` shows it), against an idle hardened container of the base image."""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict
from typing import Any

from containai.bench.context import CHANNEL, BenchError, BenchRun, run_checked
from containai.bench.figures import Figure, Rule, Target
from containai.bench.stats import Summary
from containai.images.catalog import image_tag

ROLE = "ai.containai.role"
SETTLE = 2.0  # seconds after ready before sampling: squid's workers finish starting
LIMIT_MIB = 100e6 / 2**20  # the target says 100 MB


def used_mib(container: Any) -> float:
    stats = container.stats(stream=False)
    memory = stats.get("memory_stats") or {}
    usage = float(memory.get("usage") or 0)
    detail = memory.get("stats") or {}
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return (usage - float(cache or 0)) / 2**20


def footprint(run: BenchRun) -> list[Figure]:
    repo = run.repo(10, "root")
    env = run.env
    by_role: dict[str, list[float]] = defaultdict(list)
    sidecars: list[float] = []
    session_total: list[float] = []
    idle: list[float] = []
    for _ in range(run.repeat):
        result = run_checked(
            run.cli(
                "launch-agent", "shell", repo, "--channel", CHANNEL, "--no-push", "--network-proxy", "squid"
            ),
            env=env,
            what="launch-agent",
        )
        name = result.stdout.strip().splitlines()[-1]
        baseline = subprocess.run(
            run.engine_cli(
                "run",
                "-d",
                "--rm",
                "--network",
                "none",
                "--read-only",
                "--cap-drop",
                "ALL",
                "--label",
                run.scope,
                image_tag("base", CHANNEL),
                "sleep",
                "infinity",
            ),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        try:
            time.sleep(SETTLE)
            containers = [c for c in run.session_containers() if c.id != baseline]
            if not containers:
                raise BenchError(f"no running container found for session {name}")
            roles = {c.labels.get(ROLE) or c.name: used_mib(c) for c in containers}
            for role, mib in roles.items():
                by_role[role].append(mib)
            sidecars.append(sum(mib for role, mib in roles.items() if role != "agent"))
            session_total.append(sum(roles.values()))
            idle.append(used_mib(run.client.containers.get(baseline)))
        finally:
            run.client.containers.get(baseline).remove(force=True)
            run.remove_sessions([name])
    base = Summary.of(idle)
    figures = [
        Figure(
            f"memory.{role}",
            f"memory of the session's {role} container (shell agent, squid mode, idle)",
            "MiB",
            Summary.of(values),
            base,
            "an idle hardened `sleep` container of the base image",
            params={"role": role},
        )
        for role, values in sorted(by_role.items())
    ]
    figures += [
        Figure(
            "memory.sidecars",
            "memory of all the session's sidecars together",
            "MiB",
            Summary.of(sidecars),
            target=Target(Rule.AT_MOST, LIMIT_MIB, f"< 100 MB ({LIMIT_MIB:.1f} MiB)"),
        ),
        Figure(
            "memory.session",
            "memory of all the session's containers together",
            "MiB",
            Summary.of(session_total),
        ),
    ]
    return figures
