"""What a benchmark run produces: figures (a value, its baseline, its target) and the run's context.

Pure values, rendered by ``report``. The targets are the ones of issue 13, each a rule about a
figure's value against its baseline measured in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from containai.bench.stats import Summary


class Rule(Enum):
    RATIO_AT_MOST = "ratio_at_most"  # value / baseline <= limit
    RATIO_AT_LEAST = "ratio_at_least"  # value / baseline >= limit
    DELTA_AT_MOST = "delta_at_most"  # value - baseline <= limit
    AT_MOST = "at_most"  # value <= limit


@dataclass(frozen=True)
class Target:
    rule: Rule
    limit: float
    text: str  # how the issue states it: "<= 1.5x the floor"

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule.value, "limit": self.limit, "text": self.text}

    def met(self, value: Summary, baseline: Summary | None) -> bool | None:
        """Whether the medians meet the target; None when the baseline it needs was not measured."""
        if self.rule is Rule.AT_MOST:
            return value.median <= self.limit
        if baseline is None:
            return None
        if self.rule is Rule.DELTA_AT_MOST:
            return value.median - baseline.median <= self.limit
        if baseline.median <= 0:
            return None
        ratio = value.median / baseline.median
        if self.rule is Rule.RATIO_AT_MOST:
            return ratio <= self.limit
        return ratio >= self.limit


@dataclass(frozen=True)
class Figure:
    """One measured quantity. ``name`` is stable (the JSON key); ``params`` place it on a plot."""

    name: str
    title: str
    unit: str
    value: Summary
    baseline: Summary | None = None
    baseline_title: str = ""
    target: Target | None = None
    params: dict[str, str | int | float] = field(default_factory=dict)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline.median == 0:
            return None
        return self.value.median / self.baseline.median

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value, self.baseline)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "unit": self.unit,
            "value": self.value.as_json(),
            "baseline": None if self.baseline is None else self.baseline.as_json(),
            "baseline_title": self.baseline_title,
            "ratio": self.ratio,
            "target": None if self.target is None else self.target.as_json(),
            "met": self.met,
            "params": dict(self.params),
            "note": self.note,
        }


@dataclass(frozen=True)
class Machine:
    nproc: int
    memory_mib: int
    kernel: str
    engine: str  # "docker" or "podman"
    engine_version: str
    python: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Results:
    """A whole run: where, how, and every figure in the order measured."""

    run_id: str
    started: str  # ISO 8601, UTC
    seconds: float
    machine: Machine
    command: str
    repeat: int
    quick: bool
    figures: tuple[Figure, ...]
    failures: tuple[str, ...] = ()  # figure families that could not be measured, with why

    def figure(self, name: str) -> Figure | None:
        return next((f for f in self.figures if f.name == name), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "run_id": self.run_id,
            "started": self.started,
            "seconds": self.seconds,
            "machine": self.machine.as_json(),
            "command": self.command,
            "repeat": self.repeat,
            "quick": self.quick,
            "figures": {f.name: f.as_json() for f in self.figures},
            "failures": list(self.failures),
        }


def parse_summary(data: dict[str, Any] | None) -> Summary | None:
    if data is None:
        return None
    return Summary(float(data["median"]), float(data["min"]), float(data["max"]), int(data["n"]))


def parse_target(data: dict[str, Any] | None) -> Target | None:
    if data is None:
        return None
    return Target(Rule(data["rule"]), float(data["limit"]), data["text"])


def parse_results(data: dict[str, Any]) -> Results:
    """Results back from the JSON file (to re-render the report or the plots of a past run)."""
    figures = tuple(
        Figure(
            name=f["name"],
            title=f["title"],
            unit=f["unit"],
            value=parse_summary(f["value"]) or Summary.single(0.0),
            baseline=parse_summary(f["baseline"]),
            baseline_title=f["baseline_title"],
            target=parse_target(f["target"]),
            params=dict(f["params"]),
            note=f["note"],
        )
        for f in data["figures"].values()
    )
    return Results(
        run_id=data["run_id"],
        started=data["started"],
        seconds=float(data["seconds"]),
        machine=Machine(**data["machine"]),
        command=data["command"],
        repeat=int(data["repeat"]),
        quick=bool(data["quick"]),
        figures=figures,
        failures=tuple(data["failures"]),
    )
