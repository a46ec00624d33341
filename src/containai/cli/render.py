"""Turning results into text: the doctor report, sessions, settings, build progress, JSON envelopes.

Commands return data; this module is the one place that turns it into words (text mode) or into a
versioned JSON envelope (``--json``), which holds values only, never sentences meant for a person.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from containai.config import Settings
from containai.doctor import Report
from containai.images.build import BuildStep
from containai.runtime.base import BuildEvent, ImageInfo
from containai.text import terminal_safe

if TYPE_CHECKING:
    from containai.selftest.cases import Report as SelftestReport
    from containai.session.commands import PromptResult
    from containai.session.manager import SessionRow

log = logging.getLogger("containai.build")

_MARKS = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red")}


def render_doctor(report: Report, console: Console) -> None:
    for check in report.checks:
        mark, colour = _MARKS[check.status]
        line = Text()
        line.append(f"{mark} ", style=f"bold {colour}")
        line.append(f"{check.name}: ", style="bold")
        line.append(check.summary)
        console.print(line)
        if check.hint and check.status != "ok":
            console.print(Text(f"    fix: {check.hint}", style=colour))
    verdict = "ready to launch" if report.ok else "not ready: fix the ✗ lines above"
    console.print(Text(verdict, style="bold green" if report.ok else "bold red"))


def render_selftest(report: SelftestReport, console: Console) -> None:
    """One row a case: held or broke, what was seen, and for a broken one what to change."""
    table = Table(show_header=True, header_style="bold", show_lines=False)
    table.add_column("case")
    table.add_column("attack")
    table.add_column("", no_wrap=True)
    table.add_column("seen / what to change")
    for result in report.results:
        mark, colour = _MARKS["ok" if result.held else "fail"]
        seen = Text(result.detail)  # the container's words: text, never markup
        if not result.held:
            seen.append(f"\nfix: {result.case.fix}", style=colour)
        table.add_row(
            result.case.id,
            result.case.title,
            Text(f"{mark} {'held' if result.held else 'broke'}", style=f"bold {colour}"),
            seen,
        )
    console.print(table)
    held = len(report.results) - len(report.broke)
    verdict = f"{held} of {len(report.results)} held in {report.seconds:.0f} s"
    if report.broke:
        verdict += f"; {len(report.broke)} broke: change what the fix lines say, then run it again"
    console.print(Text(verdict, style="bold green" if report.ok else "bold red"))


def print_json(data: Any) -> None:
    """A JSON document on stdout: plain, so that a script can read it whatever the terminal."""
    click.echo(json.dumps(data, indent=2))


class ConsoleReporter:
    """Progress and warnings of a command, on stderr."""

    def __init__(self, console: Console) -> None:
        self.console = console

    # Text, never markup; and never a control sequence: a note or a warning may quote what a
    # session said (an export's last line, git's error, an engine's refusal, the proxy's audit).
    def note(self, text: str) -> None:
        self.console.print(Text(f"• {terminal_safe(text)}", style="dim"))

    def warn(self, text: str) -> None:
        self.console.print(Text(f"! {terminal_safe(text)}", style="yellow"))


_SHORTSTAT = re.compile(r"(\d+) (file|insertion|deletion)")


def parse_shortstat(text: str) -> dict[str, int]:
    """``git diff --shortstat`` as numbers: files changed, insertions, deletions."""
    counts = {"files_changed": 0, "insertions": 0, "deletions": 0}
    keys = {"file": "files_changed", "insertion": "insertions", "deletion": "deletions"}
    for number, kind in _SHORTSTAT.findall(text):
        counts[keys[kind]] = int(number)
    return counts


def prompt_result_json(result: PromptResult) -> dict[str, Any]:
    """The result of `containai run --json`: values only (the sentences went to stderr).

    Schema 2 dropped schema 1's ``message`` and ``egress`` sentences; ``kept_reason`` is the error
    that kept the work in the session, ``changes`` the diffstat as numbers.
    """
    return {
        "schema": 2,
        "exit_status": result.exit_status,
        "session": result.session,
        "session_id": result.session_id,
        "workspace": result.workspace,
        "branch": result.branch,
        "commits": result.commits,
        "diffstat": result.diffstat,
        "changes": parse_shortstat(result.diffstat),
        "duration_seconds": result.duration_seconds,
        "kept": result.kept,
        "kept_reason": result.kept_reason,
    }


def _age_seconds(created: str, now: datetime) -> int | None:
    try:
        return int((now - datetime.fromisoformat(created)).total_seconds())
    except ValueError:
        return None


def sessions_json(rows: Sequence[SessionRow], now: datetime) -> dict[str, Any]:
    return {
        "schema": 2,
        "sessions": [
            {
                "name": row.name,
                "agent": row.agent,
                "repo": row.repo or None,
                "branch": row.branch or None,
                "status": row.status,
                "resumable": row.resumable,
                "mode": row.mode,
                "created": row.created,
                "age_seconds": _age_seconds(row.created, now),
                "session": row.session,
                "stopped": row.stopped,  # why ContainAI stopped it (its disk cap); null otherwise
            }
            for row in rows
        ],
    }


def render_sessions(console: Console, rows: Sequence[SessionRow], now: datetime) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "AGENT", "REPO", "BRANCH", "STATUS", "AGE"):
        table.add_column(column)
    for row in rows:
        status = "stopped" if row.stopped else row.status  # by ContainAI: said why below the table
        if row.resumable and not row.stopped:
            status = f"{row.status} (connect-agent resumes it)"
        table.add_row(row.name, row.agent, row.repo or "-", row.branch or "-", status, row.age(now))
    console.print(table)
    for row in rows:
        if row.stopped:
            console.print(Text(row.stopped))


def render_settings(settings: Settings, console: Console) -> None:
    rows = settings.rows()
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        line = Text()
        line.append(f"{name:<{width}}  ", style="bold")
        line.append(value)
        line.append(f"  ({source})", style="dim")
        console.print(line)


class ConsoleBuildReporter:
    """Build progress on stderr: a live spinner on a terminal, plain step lines elsewhere (CI logs)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ConsoleBuildReporter:
        if self.live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def log(self, text: str) -> None:
        log.debug("%s", text)

    def note(self, text: str) -> None:
        log.info("%s", text)
        self.console.print(Text(f"• {text}"))

    def part_started(self, step: BuildStep) -> None:
        log.info("building %s", step.tag)
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(f"{step.tag}: starting")
        else:
            self.console.print(Text(f"building {step.tag}"))

    def event(self, step: BuildStep, event: BuildEvent) -> None:
        log.debug("%s: %s", step.part, event.text)
        if not event.step:
            return
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=f"{step.tag}: {event.text[:90]}")
        elif not self.live:
            self.console.print(Text(f"  {event.text[:160]}"))

    def part_done(self, step: BuildStep, image: ImageInfo, *, cached: bool, seconds: float) -> None:
        how = "unchanged, from cache" if cached else "built"
        log.info("%s %s in %.1fs (%s)", step.tag, how, seconds, image.id)
        line = Text()
        line.append("✓ ", style="bold green")
        line.append(f"{step.tag} ", style="bold")
        line.append(f"{how} in {seconds:.1f}s ({image.id.removeprefix('sha256:')[:12]})")
        self.console.print(line)
