"""One benchmark run: its label, its scratch folder, its engine, its CLI environment, and its cleanup.

Everything the run creates carries ``containai-bench.run=<id>``: containers, networks and volumes it
makes itself, and sessions started through the CLI (CONTAINAI_LABELS, which also scopes the CLI's
``remove-agent --all``). ``cleanup`` removes exactly that, and nothing else on the engine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from containai.bench.repo import generate_repo
from containai.runtime.select import resolve_engine

LABEL = "containai-bench.run"
USER_UID = 1000  # the owner of "user-owned" repositories (the overlay path); any uid but root's
CHANNEL = "dev"


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which command and what it printed."""


def run_checked(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float = 900, what: str = ""
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BenchError(f"{what or ' '.join(argv[:4])} exited {result.returncode}:\n{tail}")
    return result


def timed(argv: Sequence[str], *, env: Mapping[str, str], timeout: float = 900) -> float:
    """Seconds from spawning ``argv`` to its exit (whole process, as a user waits for it)."""
    start = time.perf_counter()
    run_checked(argv, env=env, timeout=timeout)
    return time.perf_counter() - start


@dataclass
class BenchRun:
    run_id: str
    base_url: str
    runtime_flag: str | None
    workdir: Path
    client: Any
    repeat: int
    quick: bool
    bin: Path = field(default_factory=lambda: Path(sys.executable).parent)
    _repos: dict[tuple[int, str], Path] = field(default_factory=dict)

    @classmethod
    def create(cls, *, runtime: str | None, repeat: int, quick: bool) -> BenchRun:
        choice = resolve_engine(runtime, os.environ)
        run_id = uuid.uuid4().hex[:10]
        # 0711: a user-owned repository below must be reachable by its owner's git.
        workdir = Path(tempfile.mkdtemp(prefix=f"containai-bench-{run_id}-"))
        workdir.chmod(0o711)
        client = docker.DockerClient(base_url=choice.base_url, version="auto", timeout=600)
        return cls(run_id, choice.base_url, runtime, workdir, client, repeat, quick)

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.run_id}

    @property
    def scope(self) -> str:
        return f"{LABEL}={self.run_id}"

    @property
    def selector(self) -> dict[str, str]:
        return {"label": self.scope}

    @property
    def env(self) -> dict[str, str]:
        """The CLI's environment: its own home, git config and labels; never the user's sessions."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINAI_")}
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        env |= {
            "HOME": str(home),
            "CONTAINAI_HOME": str(self.workdir / "containai"),
            "CONTAINAI_LABELS": self.scope,
            "GIT_CONFIG_GLOBAL": str(self.workdir / "gitconfig"),
            "PATH": f"{self.bin}:{env.get('PATH', '')}",
        }
        if self.runtime_flag:
            env["CONTAINAI_RUNTIME"] = self.runtime_flag
        else:
            env["DOCKER_HOST"] = self.base_url
        return env

    def program(self, name: str) -> str:
        path = self.bin / name
        return str(path) if path.exists() else shutil.which(name) or name

    def cli(self, name: str, *args: str | Path) -> list[str]:
        return [self.program(name), *map(str, args)]

    def engine_cli(self, *args: str) -> list[str]:
        """The docker CLI against this run's engine (Podman's socket speaks the same API)."""
        return ["docker", "-H", self.base_url, *args]

    def repo(self, files: int, owner: str) -> Path:
        """A generated repository of ``files`` files owned by "user" (overlay path) or "root" (clone)."""
        key = (files, owner)
        if key not in self._repos:
            uid = USER_UID if owner == "user" else None
            repo = generate_repo(self.workdir / "repos" / f"{owner}-{files}", files, owner=uid)
            if uid is not None:
                (self.workdir / "repos").chmod(0o711)
                # Root's git (the host side here) must vouch for a repository it does not own.
                subprocess.run(
                    ["git", "config", "--global", "--add", "safe.directory", str(repo)],
                    env=self.env,
                    check=True,
                )
            self._repos[key] = repo
        return self._repos[key]

    def session_containers(self, session: str | None = None) -> list[Any]:
        containers: list[Any] = self.client.containers.list(filters=self.selector)
        if session is None:
            return containers
        return [c for c in containers if c.name == session or c.labels.get("ai.containai.session") == session]

    def remove_sessions(self, names: Sequence[str]) -> None:
        """End sessions this run started, without bringing anything home (their repos are generated)."""
        procs = [
            subprocess.Popen(
                self.cli("remove-agent", name, "--no-push"),
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name in names
        ]
        for proc in procs:
            proc.wait(timeout=300)

    def cleanup(self) -> list[str]:
        """Remove this run's sessions, containers, networks, volumes and folder; what could not be."""
        left: list[str] = []
        with contextlib.suppress(Exception):
            subprocess.run(
                self.cli("remove-agent", "--all", "--no-push", "--label", self.scope),
                env=self.env,
                capture_output=True,
                timeout=300,
                check=False,
            )
        for kind in ("containers", "networks", "volumes"):
            for thing in self._labelled(kind):
                try:
                    if kind == "containers":
                        thing.remove(force=True, v=True)
                    elif kind == "volumes":
                        thing.remove(force=True)
                    else:
                        thing.remove()
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as error:
                    left.append(f"{kind[:-1]} {thing.name}: {error}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.client.close()
        return left

    def _labelled(self, kind: str) -> Iterator[Any]:
        collection = getattr(self.client, kind)
        kwargs: dict[str, Any] = {"filters": self.selector}
        if kind == "containers":
            kwargs["all"] = True
        try:
            yield from collection.list(**kwargs)
        except docker.errors.APIError:
            return
