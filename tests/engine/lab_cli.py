"""ContainAI's CLI with an egress lab injected: a test-only entry point, never installed.

The egress tests put the session's proxy on a fake internet (tests/engine/fakenet.py) and let it
reach that network's private range. ContainAI reads no such hook from the environment or a file, so a
user cannot turn it on; the tests inject it into the settings here and then run the very same
commands and launchers:

    python tests/engine/lab_cli.py --network NET --dns IP --allow-range CIDR -- PROGRAM [ARGS...]

``install_lab_programs`` writes a folder of wrappers (``containai``, ``run-claude-dev``, ...) that run
this module, so a test puts that folder first on PATH and calls the programs by name.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from containai.cli.app import AppContext, run_cli
from containai.cli.launchers import run_launcher
from containai.cli.main import cli
from containai.cli.programs import launchers
from containai.egress.sidecar import Lab


def install_lab_programs(folder: Path, lab: Lab) -> Path:
    """Wrappers for `containai` and every launcher name that run them with ``lab``; the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    lab_args = ["--network", lab.network]
    lab_args += [arg for dns in lab.dns for arg in ("--dns", dns)]
    lab_args += [arg for cidr in lab.allow_ranges for arg in ("--allow-range", cidr)]
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
    parser.add_argument("--network", required=True)
    parser.add_argument("--dns", action="append", default=[])
    parser.add_argument("--allow-range", action="append", default=[])
    options = parser.parse_args(argv[:cut])
    program, args = argv[cut + 1], list(argv[cut + 2 :])
    lab = Lab(options.network, tuple(options.dns), tuple(options.allow_range))

    def inject(app: AppContext) -> None:
        app.lab = lab

    if program == "containai":
        return run_cli(cli, args=args, prog_name=program, extra=inject)
    return run_launcher(program, args, extra=inject)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
