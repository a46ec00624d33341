"""ContainAI's CLI with an egress lab injected: a test-only entry point, never installed.

The egress tests put the session's proxy on a fake internet (tests/engine/fakenet.py) and let it
reach that network's private range. ContainAI reads no such hook from the environment or a file, so a
user cannot turn it on; the tests inject it into the settings here and then run the very same
commands and launchers:

    python tests/engine/lab_cli.py --network NET --dns IP --allow-range CIDR -- PROGRAM [ARGS...]

and likewise for the other hooks (config.Hooks): ``--claude-token-url URL`` points any refresh of a
Claude login at a stand-in endpoint, ``--login-check-seconds N`` checks that login more often.

``--kill-at STEP`` makes the launcher SIGKILL itself just before STEP of a session's set-up or
finish (``KILL_STEPS``), as a crash or the OOM killer would: the fault tests then show that `gc`
brings the work home and leaves nothing behind. Like the lab, it exists only here, by wrapping the
session's parts and ports in this process; ContainAI itself has no such hook.

``--writable-root`` gives the session's agent a writable root filesystem: the one protection the
selftest test switches off, to show that `containai selftest` reports it broken.

``install_lab_programs`` writes a folder of wrappers (``containai``, ``run-claude-dev``, ...) that run
this module, so a test puts that folder first on PATH and calls the programs by name.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from containai.cli.app import AppContext, run_cli
from containai.cli.launchers import run_launcher
from containai.cli.main import cli
from containai.cli.programs import launchers
from containai.config import Hooks
from containai.egress.sidecar import Lab


def lab_of(fake_internet: Any) -> Lab:
    """The lab that puts a session's proxy on ``fake_internet`` (a fakenet.FakeInternet)."""
    return Lab(fake_internet.network, (fake_internet.dns_ip,), (str(fake_internet.subnet),))


# Where a launcher can be killed: before each part's step (``<role>.<step>``), before the agent's
# container is created or started, before and after the git gate's import, and before the first
# labelled container is removed.
SETUP_STEPS = (
    "workspace.provision",
    "egress.provision",
    "agent.create",
    "agent.start",
    "workspace.start",
    "egress.start",
)
FINISH_STEPS = (
    "workspace.finish",
    "git.import",
    "git.imported",
    "egress.finish",
    "egress.teardown",
    "workspace.teardown",
    "teardown.remove",
)
KILL_STEPS = SETUP_STEPS + FINISH_STEPS


def _die(step: str) -> None:
    sys.stderr.write(f"lab_cli: SIGKILL at {step}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _Killing:
    """Delegates everything to ``inner``; calls ``decide(method, args)`` first, which may kill."""

    def __init__(self, inner: Any, decide: Callable[[str, tuple[Any, ...]], None]) -> None:
        self._inner = inner
        self._decide = decide

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            self._decide(name, args)
            return found(*args, **kwargs)

        return call


def install_kill_at(step: str) -> None:
    """Wrap the session's parts and ports in this process so that it SIGKILLs itself before ``step``."""
    if step not in KILL_STEPS:
        raise SystemExit(f"lab_cli: unknown step {step}; one of {', '.join(KILL_STEPS)}")
    from containai.session import manager
    from containai.session.ports import Ports

    def part(inner: Any) -> Any:
        role = inner.role

        def decide(method: str, _args: tuple[Any, ...]) -> None:
            if f"{role}.{method}" == step:
                _die(step)

        return _Killing(inner, decide)

    real_parts = manager.default_parts
    manager.default_parts = lambda: tuple(part(p) for p in real_parts())  # type: ignore[assignment]

    def runtime_decide(method: str, args: tuple[Any, ...]) -> None:
        if method == "create_container" and step == "agent.create":
            if args[0].labels.get("ai.containai.role") == "agent":
                _die(step)
        elif method == "start" and step == "agent.start":
            found = real_runtime.container(args[0])
            if found is not None and found.labels.get("ai.containai.role") == "agent":
                _die(step)
        elif method == "remove_container" and step == "teardown.remove":
            _die(step)

    def git_decide(method: str, _args: tuple[Any, ...]) -> None:
        if method == "import_bundle" and step == "git.import":
            _die(step)

    class ImportThenDie(_Killing):
        def __getattr__(self, name: str) -> Any:
            found = super().__getattr__(name)
            if name != "import_bundle" or step != "git.imported":
                return found

            def call(*args: Any, **kwargs: Any) -> Any:
                result = found(*args, **kwargs)
                _die(step)
                return result

            return call

    real_local = Ports.local.__func__  # type: ignore[attr-defined]
    real_runtime: Any = None

    def local(cls: type[Ports], runtime: Any, **kwargs: Any) -> Ports:
        nonlocal real_runtime
        real_runtime = runtime
        ports = real_local(cls, runtime, **kwargs)
        return replace(
            ports, runtime=_Killing(runtime, runtime_decide), git=ImportThenDie(ports.git, git_decide)
        )

    Ports.local = classmethod(local)  # type: ignore[method-assign, assignment]


def install_writable_root() -> None:
    """The agent's container spec as planned, but with a writable root filesystem."""
    from containai.session import manager

    real = manager.hardened_spec

    def weakened(**kwargs: Any) -> Any:
        return replace(real(**kwargs), read_only=False)

    manager.hardened_spec = weakened  # type: ignore[assignment]


def install_lab_programs(
    folder: Path, hooks: Hooks, *, kill_at: str | None = None, writable_root: bool = False
) -> Path:
    """Wrappers for `containai` and every launcher name that run them with ``hooks``; the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    lab_args = ["--kill-at", kill_at] if kill_at else []
    lab_args += ["--writable-root"] if writable_root else []
    if (lab := hooks.lab) is not None:
        lab_args += ["--network", lab.network]
        lab_args += [arg for dns in lab.dns for arg in ("--dns", dns)]
        lab_args += [arg for cidr in lab.allow_ranges for arg in ("--allow-range", cidr)]
    if hooks.claude_token_url is not None:
        lab_args += ["--claude-token-url", hooks.claude_token_url]
    if hooks.login_check_seconds is not None:
        lab_args += ["--login-check-seconds", str(hooks.login_check_seconds)]
    names = ["containai", *(name for program in launchers() for name in program.installed_names())]
    for name in names:
        argv = [sys.executable, str(Path(__file__).resolve()), *lab_args, "--", name]
        wrapper = folder / name
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n', encoding="utf-8")
        wrapper.chmod(0o755)
    return folder


def main(argv: Sequence[str]) -> int:
    cut = list(argv).index("--")
    parser = argparse.ArgumentParser(prog="lab_cli")
    parser.add_argument("--network")
    parser.add_argument("--dns", action="append", default=[])
    parser.add_argument("--allow-range", action="append", default=[])
    parser.add_argument("--claude-token-url")
    parser.add_argument("--login-check-seconds", type=float)
    parser.add_argument("--kill-at", choices=KILL_STEPS)
    parser.add_argument("--writable-root", action="store_true")
    options = parser.parse_args(argv[:cut])
    if options.writable_root:
        install_writable_root()
    if options.kill_at:
        install_kill_at(options.kill_at)
    program, args = argv[cut + 1], list(argv[cut + 2 :])
    lab = Lab(options.network, tuple(options.dns), tuple(options.allow_range)) if options.network else None
    hooks = Hooks(lab, options.claude_token_url, options.login_check_seconds)

    def inject(app: AppContext) -> None:
        app.hooks = hooks

    if program == "containai":
        return run_cli(cli, args=args, prog_name=program, extra=inject)
    return run_launcher(program, args, extra=inject)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
