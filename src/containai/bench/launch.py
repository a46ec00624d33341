"""Launch figures: a no-op session against the engine's hardened floor, the CLI's start-up against
Python's, and sessions launched at once against one."""

from __future__ import annotations

import functools
import subprocess
import sys
import time

from containai.bench.context import CHANNEL, BenchError, BenchRun, timed
from containai.bench.figures import Figure, Rule, Target
from containai.bench.stats import Summary, alternate
from containai.images.catalog import image_tag

FLOOR_TITLE = "hardened `docker run --rm --network none --read-only --cap-drop ALL` of the same image"


def floor_argv(run: BenchRun) -> list[str]:
    return run.engine_cli(
        "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--label", run.scope,
        image_tag("base", CHANNEL), "true",
    )  # fmt: skip


def noop_session_argv(run: BenchRun, repo: object, mode: str, *command: str) -> list[str]:
    return run.cli(
        "containai", "run", "shell", str(repo), "--channel", CHANNEL, "--no-push",
        "--network-proxy", mode, "--", *(command or ("true",)),
    )  # fmt: skip


def launch(run: BenchRun) -> list[Figure]:
    repo = run.repo(10, "root")
    env = run.env
    floor, restricted, squid = alternate(
        [
            lambda: timed(floor_argv(run), env=env),
            lambda: timed(noop_session_argv(run, repo, "restricted"), env=env),
            lambda: timed(noop_session_argv(run, repo, "squid"), env=env),
        ],
        run.repeat,
    )
    base = Summary.of(floor)
    restricted_s = Summary.of(restricted)
    common = (
        "`containai run shell --no-push --network-proxy {} -- true`, 10-file repo owned by root (clone path)"
    )
    return [
        Figure("launch.floor", FLOOR_TITLE + ", running `true`", "s", base),
        Figure(
            "launch.restricted",
            common.format("restricted"),
            "s",
            restricted_s,
            base,
            "the hardened floor",
            Target(Rule.RATIO_AT_MOST, 1.5, "<= 1.5x the floor"),
        ),
        Figure(
            "launch.squid",
            common.format("squid"),
            "s",
            Summary.of(squid),
            base,
            "the hardened floor",
            Target(Rule.RATIO_AT_MOST, 2.5, "<= 2.5x the floor"),
            note=f"{Summary.of(squid).median / restricted_s.median:.2f}x restricted",
        ),
    ]


def version(run: BenchRun) -> list[Figure]:
    env = run.env
    python, cli = alternate(
        [
            lambda: timed([sys.executable, "-c", "pass"], env=env),
            lambda: timed(run.cli("containai", "--version"), env=env),
        ],
        run.repeat if run.quick else max(run.repeat, 5),  # cheap: more samples for a steadier median
    )
    return [
        Figure(
            "cli.version",
            "`containai --version`",
            "s",
            Summary.of(cli),
            Summary.of(python),
            "`python3 -c pass` (the same interpreter)",
            Target(Rule.DELTA_AT_MOST, 0.1, "within 0.1 s of python3"),
        )
    ]


def launch_at_once(run: BenchRun, count: int, repo: object) -> float:
    """Seconds until ``count`` persistent sessions launched together are all ready; then ends them."""
    argv = run.cli(
        "launch-agent", "shell", str(repo), "--channel", CHANNEL, "--no-push", "--network-proxy", "squid"
    )
    env = run.env
    start = time.perf_counter()
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    outputs = [proc.communicate(timeout=900) for proc in procs]
    elapsed = time.perf_counter() - start
    names = [out.strip().splitlines()[-1] for out, _ in outputs if out.strip()]
    run.remove_sessions(names)
    failed = [err for proc, (_, err) in zip(procs, outputs, strict=True) if proc.returncode != 0]
    if failed:
        raise BenchError(f"{len(failed)} of {count} concurrent launches failed:\n{failed[0][-2000:]}")
    return elapsed


def concurrency_levels(quick: bool) -> tuple[int, ...]:
    return (1, 2) if quick else (1, 2, 4, 8)


def concurrent(run: BenchRun) -> list[Figure]:
    repo = run.repo(10, "root")
    levels = concurrency_levels(run.quick)
    samples = alternate([functools.partial(launch_at_once, run, n, repo) for n in levels], run.repeat)
    one = Summary.of(samples[0])
    figures = []
    for n, values in zip(levels, samples, strict=True):
        target = Target(Rule.RATIO_AT_MOST, 4.0, "<= 4x one") if n == 8 else None
        figures.append(
            Figure(
                f"concurrent.{n}",
                f"{n} `launch-agent shell --network-proxy squid` at once, until all are ready",
                "s",
                Summary.of(values),
                None if n == 1 else one,
                "one launch" if n > 1 else "",
                target,
                params={"sessions": n},
            )
        )
    return figures
