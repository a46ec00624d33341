"""Turning results into text: the doctor report, build progress, JSON envelopes."""

from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from containai.doctor import Report
from containai.images.build import BuildStep
from containai.runtime.base import BuildEvent, ImageInfo

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


def print_json(console: Console, data: Any) -> None:
    console.print_json(json.dumps(data), highlight=False)


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
