"""What every ContainAI command shares: the error boundary, the log file and the engine choice."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import click
from rich.console import Console
from rich.text import Text

from containai.config import Paths
from containai.errors import EXIT_CONTAINAI, ContainAIError
from containai.runtime.base import ContainerRuntime
from containai.runtime.engine import EngineRuntime
from containai.runtime.select import resolve_engine

log = logging.getLogger("containai")


@dataclass
class AppContext:
    """Per-invocation state: the environment, paths, consoles, and the engine (made on first use)."""

    environ: Mapping[str, str]
    paths: Paths
    runtime_flag: str | None = None
    debug: bool = False
    channel: str | None = None  # from the launcher's name (run-claude is prod); `containai` itself uses dev
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True))
    _runtime: ContainerRuntime | None = None

    def runtime(self) -> ContainerRuntime:
        if self._runtime is None:
            choice = resolve_engine(self.runtime_flag, self.environ)
            log.debug("engine: %s", choice.describe())
            self._runtime = EngineRuntime(choice)
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


def print_error(err: Console, message: str, hint: str | None) -> None:
    # The message and hint are plain text (they may quote config like `[network]`): no markup in them.
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    if hint:
        err.print(Text.assemble(("hint:", "yellow"), " ", hint), highlight=False)


def loggable_argv(argv: Sequence[str]) -> list[str]:
    """The command line for the log, cut after `secrets <verb> NAME`: a value typed there by mistake
    (the command refuses it) must not land in the log file."""
    if "secrets" not in argv:
        return list(argv)
    cut = argv.index("secrets") + 3
    return [*argv[:cut], *(["<redacted>"] if len(argv) > cut else [])]


def run_cli(
    command: click.Command,
    *,
    args: Sequence[str] | None = None,
    prog_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    extra: Callable[[AppContext], None] | None = None,
) -> int:
    """Run a click command behind ContainAI's one error boundary; return the exit code.

    Our failures and bad input exit 125 with a one-line error and a hint; a traceback only with
    --debug (or CONTAINAI_DEBUG=1).
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
    try:
        result = command.main(args=argv, prog_name=prog_name, standalone_mode=False, obj=app)
    except ContainAIError as exc:
        log.debug("failed", exc_info=True)
        if app.debug:
            app.err.print_exception()
        print_error(app.err, exc.message, exc.hint)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        app.err.print("interrupted")
        return 130
    except click.ClickException as exc:
        hint = "see --help" if isinstance(exc, click.UsageError) else None
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f"see `{exc.ctx.command_path} --help`"
        print_error(app.err, exc.format_message(), hint)
        return EXIT_CONTAINAI
    finally:
        app.close()
    # A command returns its exit code (doctor's verdict, an agent's status); the Exit case above
    # covers --help and ctx.exit().
    return result if isinstance(result, int) else 0
