"""ContainAI's CLI with an egress lab injected: a test-only entry point, never installed.

The egress tests put the session's proxy on a fake internet (tests/engine/fakenet.py) and let it
reach that network's private range. ContainAI reads no such hook from the environment or a file, so a
user cannot turn it on; the tests inject it into the settings here and then run the very same
commands and launchers:

    python tests/engine/lab_cli.py --network NET --dns IP --allow-range CIDR -- PROGRAM [ARGS...]

and likewise for the other hooks (config.Hooks): ``--claude-token-url URL`` points any refresh of a
Claude login at a stand-in endpoint, ``--login-check-seconds N`` checks that login more often.

``install_lab_programs`` writes a folder of wrappers (``containai``, ``run-claude-dev``, ...) that run
this module, so a test puts that folder first on PATH and calls the programs by name.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
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


def install_lab_programs(folder: Path, hooks: Hooks) -> Path:
    """Wrappers for `containai` and every launcher name that run them with ``hooks``; the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    lab_args = []
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
    options = parser.parse_args(argv[:cut])
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
