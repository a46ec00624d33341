"""What every ContainAI program shares: the one error boundary, the log file, settings and the engine.

Cheap to import on purpose (click and the standard library): `containai --version` and `--help` go
through here, so the engine client, rich and the rest are imported where a command first needs them.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from containai.config import Flags, Hooks, Paths, Settings, resolve_settings
from containai.errors import EXIT_CONTAINAI, EXIT_INTERRUPTED, ContainAIError, UsageError
from containai.text import terminal_safe

if TYPE_CHECKING:
    from rich.console import Console

    from containai.runtime.base import ContainerRuntime

log = logging.getLogger("containai")


def _console(*, stderr: bool) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@dataclass
class AppContext:
    """Per-invocation state: the environment, settings, consoles, and the engine (each made on first use)."""

    environ: Mapping[str, str]
    paths: Paths
    flags: Flags = field(default_factory=Flags)  # the global flags (--runtime, --debug) and the program
    debug: bool = False
    hooks: Hooks | None = None  # injected by the engine tests only (tests/engine/lab_cli.py)
    _settings: Settings | None = None
    _runtime: ContainerRuntime | None = None
    _out: Console | None = None
    _err: Console | None = None

    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = _console(stderr=False)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = _console(stderr=True)
        return self._err

    def settings(self, *, repo: Path | None = None, **command_flags: object) -> Settings:
        """The settings, resolved once per invocation from the global flags and this command's own
        (``channel=``, ``memory=``, ... as in ``Flags``; None means not given)."""
        if self._settings is None:
            given = {name: value for name, value in command_flags.items() if value is not None}
            flags = replace(self.flags, **given) if given else self.flags  # type: ignore[arg-type]  # names checked by replace()
            self._settings = resolve_settings(
                flags, self.environ, repo=repo, paths=self.paths, hooks=self.hooks
            )
        return self._settings

    def runtime(self) -> ContainerRuntime:
        if self._runtime is None:
            from containai.runtime.engine import EngineRuntime
            from containai.runtime.select import resolve_engine

            choice = resolve_engine(self.flags.runtime, self.environ)
            log.debug("engine: %s", choice.describe())
            self._runtime = EngineRuntime(choice, state_dir=self.paths.state_dir)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


def setup_logging(paths: Paths) -> None:
    """A full debug log always goes to a file, so the screen can stay quiet."""
    try:
        paths.log_dir.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            paths.log_file, maxBytes=5 * 2**20, backupCount=3, encoding="utf-8"
        )
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("containai")
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
    root.propagate = False


def print_error(message: str, hint: str | None) -> None:
    # Plain text, never markup: a message may quote config like `[network]`. And never a control
    # sequence: a message may quote what a session said (git, an export, the engine).
    click.echo(f"{click.style('error:', fg='red', bold=True)} {terminal_safe(message)}", err=True)
    if hint:
        click.echo(f"{click.style('hint:', fg='yellow')} {terminal_safe(hint)}", err=True)


def loggable_argv(argv: Sequence[str]) -> list[str]:
    """The command line for the log, cut after `secrets <verb> NAME`: a value typed there by mistake
    (the command refuses it) must not land in the log file."""
    if "secrets" not in argv:
        return list(argv)
    cut = argv.index("secrets") + 3
    return [*argv[:cut], *(["<redacted>"] if len(argv) > cut else [])]


def guarded(body: Callable[[], int | None], *, debug: bool) -> int:
    """ContainAI's one error boundary: run ``body``, and turn its failure into a message and an exit code.

    Our failures and bad input print one ``error:`` line and a ``hint:`` line and exit with the
    error's code (``EXIT_CONTAINAI``, see errors.py); a traceback only with --debug (CONTAINAI_DEBUG=1).
    Every entry point runs through here: the CLI, the launchers and both brokers.
    """
    try:
        result = body()
    except ContainAIError as exc:
        log.debug("failed", exc_info=True)
        if debug:
            traceback.print_exc(file=sys.stderr)
        print_error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else 0


def run_cli(
    command: click.Command,
    *,
    args: Sequence[str] | None = None,
    prog_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    extra: Callable[[AppContext], None] | None = None,
) -> int:
    """Run a click command behind the error boundary; return the exit code.

    ``extra`` adjusts the context before the command runs: the launchers set their channel, tests put
    in a fake runtime or the egress lab.
    """
    environ = dict(os.environ if environ is None else environ)
    paths = Paths.from_env(environ)
    setup_logging(paths)
    argv = list(sys.argv[1:] if args is None else args)
    app = AppContext(
        environ=environ, paths=paths, debug="--debug" in argv or environ.get("CONTAINAI_DEBUG") == "1"
    )
    if extra is not None:
        extra(app)
    log.debug("argv: %s %s", prog_name, loggable_argv(argv))

    def body() -> int:
        try:
            # A command returns its exit code (doctor's verdict, an agent's status).
            result = command.main(args=argv, prog_name=prog_name, standalone_mode=False, obj=app)
        except click.exceptions.Exit as exc:  # --help, --version, ctx.exit()
            return exc.exit_code
        except click.exceptions.Abort as exc:
            raise KeyboardInterrupt from exc
        except click.ClickException as exc:
            hint = "see --help" if isinstance(exc, click.UsageError) else None
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f"see `{exc.ctx.command_path} --help`"
            raise UsageError(exc.format_message(), hint=hint) from exc
        return result if isinstance(result, int) else 0

    try:
        return guarded(body, debug=app.debug)
    finally:
        app.close()


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the brokers, with its errors sent through the boundary (exit 125, not 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see `{self.prog} --help`")


def run_program(main: Callable[[], int | None], environ: Mapping[str, str] | None = None) -> int:
    """The boundary for a program that is not a click command (secret-broker, the session broker)."""
    environ = os.environ if environ is None else environ
    return guarded(main, debug=environ.get("CONTAINAI_DEBUG") == "1")


__all__ = [
    "EXIT_CONTAINAI",
    "AppContext",
    "ArgumentParser",
    "guarded",
    "print_error",
    "run_cli",
    "run_program",
    "setup_logging",
]
