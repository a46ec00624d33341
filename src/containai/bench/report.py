"""Rendering a run: the Markdown table of docs/benchmarks.md, the JSON file, and the PNG plots.

``render_*`` are pure; ``write_plots`` needs matplotlib (``pip install 'containai[bench]'``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from containai.bench.figures import Figure, Results, Rule
from containai.bench.stats import Summary


def number(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit in ("MiB", "MB/s"):
        return f"{value:.1f} {unit}"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.0f} {unit}"


def render_summary(summary: Summary, unit: str) -> str:
    text = number(summary.median, unit)
    if summary.n > 1:
        text += f" ({number(summary.min, unit).split()[0]}-{number(summary.max, unit).split()[0]})"
    return text


def render_comparison(figure: Figure) -> str:
    """The ratio to the baseline, or the difference where the target is about a difference."""
    if figure.baseline is None:
        return ""
    if figure.target is not None and figure.target.rule is Rule.DELTA_AT_MOST:
        return f"{figure.value.median - figure.baseline.median:+.3f} {figure.unit}"
    ratio = figure.ratio
    return "" if ratio is None else f"{ratio:.2f}x"


def render_met(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: ""}[met]


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(figures: Sequence[Figure]) -> str:
    lines = [
        "| Figure | Value: median (min-max) | Baseline | Ratio | Target | Met? |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        baseline = ""
        if f.baseline is not None:
            baseline = f"{render_summary(f.baseline, f.unit)}: {f.baseline_title}"
        title = f.title + (f" ({f.note})" if f.note else "")
        row = [
            title,
            render_summary(f.value, f.unit),
            baseline,
            render_comparison(f),
            f.target.text if f.target else "",
            render_met(f.met),
        ]
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines)


def render_results(results: Results) -> str:
    """The measured part of docs/benchmarks.md: machine, command, table, and what failed."""
    m = results.machine
    targets = [f for f in results.figures if f.target is not None]
    met = sum(1 for f in targets if f.met)
    parts = [
        f"Run `{results.run_id}`, {results.started}, {results.seconds:.0f} s, "
        f"{results.repeat} repetition(s) of each figure{' (--quick)' if results.quick else ''}.",
        "",
        f"- Machine: {m.nproc} CPUs (nproc), {m.memory_mib:,} MiB memory, kernel {m.kernel}, Python {m.python}",
        f"- Engine: {m.engine} {m.engine_version}",
        f"- Reproduce: `{results.command}`",
        f"- Targets met: {met} of {len(targets)}",
        "",
        render_table(results.figures),
    ]
    if results.failures:
        parts += ["", "Not measured in this run:", ""]
        parts += [f"- {cell(failure)}" for failure in results.failures]
    return "\n".join(parts) + "\n"


def render_json(results: Results) -> str:
    return json.dumps(results.as_json(), indent=2, sort_keys=False) + "\n"


def series(figures: Sequence[Figure], prefix: str, key: str) -> list[tuple[float, Summary]]:
    """(x, summary) points of the figures named ``prefix``*, x from ``params[key]``, in x order."""
    points = [
        (float(f.params[key]), f.value) for f in figures if f.name.startswith(prefix) and key in f.params
    ]
    return sorted(points, key=lambda point: point[0])


def write_plots(results: Results, directory: Path) -> list[Path]:
    """workspace-setup.png and concurrent-launch.png; raises ImportError without matplotlib."""
    import matplotlib  # optional dependency: only when plots are asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    plots = [
        (
            "workspace-setup.png",
            "Workspace set-up (no-op session) against repository size",
            "files in the repository",
            [
                ("overlay (a repository of the user's)", "workspace.overlay.", "files"),
                ("shared clone (what a root-owned repository gets)", "workspace.clone.", "files"),
            ],
            True,
        ),
        (
            "concurrent-launch.png",
            "Sessions launched at once, until all are ready",
            "sessions launched at once",
            [("squid sessions", "concurrent.", "sessions")],
            False,
        ),
    ]
    for filename, title, xlabel, lines, logx in plots:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        plotted = False
        for label, prefix, key in lines:
            points = series(results.figures, prefix, key)
            if not points:
                continue
            xs = [x for x, _ in points]
            medians = [s.median for _, s in points]
            low = [s.median - s.min for _, s in points]
            high = [s.max - s.median for _, s in points]
            ax.errorbar(xs, medians, yerr=[low, high], marker="o", capsize=4, label=label)
            plotted = True
        if not plotted:
            plt.close(fig)
            continue
        if logx:  # sizes and times both span decades: log on both axes
            ax.set_xscale("log")
            ax.set_yscale("log")
        else:
            points = series(results.figures, lines[0][1], lines[0][2])
            ax.set_xticks([x for x, _ in points])
            one = points[0][1].median
            ax.plot([x for x, _ in points], [one * x for x, _ in points], ":", color="grey", label="n x one")
            ax.axhline(4 * one, linestyle="--", color="tab:red", linewidth=1, label="target at 8: 4x one")
            ax.set_ylim(bottom=0, top=max(s.max for _, s in points) * 1.15)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds: median, bars min-max")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.text(
            0.99, 0.01, f"{results.machine.nproc} CPUs, {results.machine.engine}", ha="right", fontsize=7
        )
        fig.tight_layout()
        path = directory / filename
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
