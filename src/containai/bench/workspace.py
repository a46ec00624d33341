"""Workspace figures: set-up time against repository size on both paths, and a one-file commit
brought home.

Set-up is timed as the whole no-op session (`containai run shell --no-push --network-proxy
restricted -- true`): what grows with the repository is the workspace, the rest is constant, so the
ratio to the 10-file repository on the same path isolates it.
"""

from __future__ import annotations

import functools

from containai.bench.context import CHANNEL, BenchRun, timed
from containai.bench.figures import Figure, Rule, Target
from containai.bench.launch import noop_session_argv
from containai.bench.stats import Summary, alternate

PATHS = {
    "overlay": "overlay (the repo is the user's)",
    "clone": "shared clone (what a root-owned repo gets; forced with CONTAINAI_WORKSPACE=clone)",
}
TARGETS = {"overlay": 1.2, "clone": 2.0}
LARGE = 100_000
COMMIT = "echo $$ > bench-commit.txt && git add bench-commit.txt && git commit -q -m 'bench: one file'"


def sizes(quick: bool) -> tuple[int, ...]:
    return (10, 1_000) if quick else (10, 10_000, LARGE)


def setup(run: BenchRun) -> list[Figure]:
    figures: list[Figure] = []
    for path, title in PATHS.items():
        # The same user-owned repositories on both paths: generating 100,000 files twice costs minutes.
        env = run.env | {"CONTAINAI_WORKSPACE": path}
        repos = [run.repo(files, "user") for files in sizes(run.quick)]
        samples = alternate(
            [functools.partial(timed, noop_session_argv(run, repo, "restricted"), env=env) for repo in repos],
            run.repeat,
        )
        smallest = Summary.of(samples[0])
        for files, values in zip(sizes(run.quick), samples, strict=True):
            limit = TARGETS[path]
            figures.append(
                Figure(
                    f"workspace.{path}.{files}",
                    f"no-op session, {files:,} files, {title}",
                    "s",
                    Summary.of(values),
                    None if files == 10 else smallest,
                    "10 files, same path" if files != 10 else "",
                    Target(Rule.RATIO_AT_MOST, limit, f"<= {limit}x 10 files") if files == LARGE else None,
                    params={"path": path, "files": files},
                )
            )
    return figures


def commit(run: BenchRun) -> list[Figure]:
    figures: list[Figure] = []
    env = run.env
    for files in (sizes(run.quick)[0], sizes(run.quick)[-1]):
        repo = run.repo(files, "user")

        def session(*command: str, repo: object = repo) -> float:
            argv = run.cli(
                "containai", "run", "shell", str(repo), "--channel", CHANNEL,
                "--network-proxy", "restricted", "--", *command,
            )  # fmt: skip
            return timed(argv, env=env)

        without, with_commit = alternate(
            [lambda: session("true"), lambda: session("sh", "-c", COMMIT)], run.repeat
        )
        base, value = Summary.of(without), Summary.of(with_commit)
        figures.append(
            Figure(
                f"commit.{files}",
                f"session with a one-file commit brought home, {files:,} files (overlay path)",
                "s",
                value,
                base,
                "the same session without a commit",
                Target(Rule.DELTA_AT_MOST, 0.3, "adds <= 0.3 s"),
                params={"files": files},
                note=f"+{value.median - base.median:.2f} s",
            )
        )
    return figures
