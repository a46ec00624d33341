"""The benchmark harness's pure parts: statistics, targets, report rendering, repository generation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from containai.bench.fakenet_server import bulk_size
from containai.bench.figures import Figure, Machine, Results, Rule, Target, parse_results
from containai.bench.repo import PER_DIRECTORY, count_files, generate_repo, layout
from containai.bench.report import render_json, render_results, render_table, series, write_plots
from containai.bench.stats import Summary, alternate, percentile


def test_summary_is_the_median_with_min_and_max() -> None:
    assert Summary.of([3.0, 1.0, 2.0, 10.0]) == Summary(2.5, 1.0, 10.0, 4)
    assert Summary.single(4.0) == Summary(4.0, 4.0, 4.0, 1)
    with pytest.raises(ValueError):
        Summary.of([])


def test_percentile_is_an_observed_value_by_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([2.0, 1.0], 0) == 1.0
    with pytest.raises(ValueError):
        percentile(samples, 101)


def test_alternate_interleaves_the_measures_and_rotates_who_goes_first() -> None:
    order: list[str] = []

    def measure(name: str, value: float) -> float:
        order.append(name)
        return value

    samples = alternate([lambda: measure("a", 1.0), lambda: measure("b", 2.0), lambda: measure("c", 3.0)], 3)
    assert samples == [[1.0] * 3, [2.0] * 3, [3.0] * 3]
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    with pytest.raises(ValueError):
        alternate([lambda: 1.0], 0)


@pytest.mark.parametrize(
    ("rule", "limit", "value", "baseline", "met"),
    [
        (Rule.RATIO_AT_MOST, 1.5, 1.4, 1.0, True),
        (Rule.RATIO_AT_MOST, 1.5, 1.6, 1.0, False),
        (Rule.RATIO_AT_LEAST, 0.8, 80.0, 100.0, True),
        (Rule.RATIO_AT_LEAST, 0.8, 79.0, 100.0, False),
        (Rule.DELTA_AT_MOST, 0.3, 1.25, 1.0, True),
        (Rule.DELTA_AT_MOST, 0.3, 1.35, 1.0, False),
        (Rule.AT_MOST, 5.0, 4.9, None, True),
        (Rule.AT_MOST, 5.0, 5.1, None, False),
        (Rule.RATIO_AT_MOST, 1.5, 1.0, None, None),  # its baseline was not measured
    ],
)
def test_targets(rule: Rule, limit: float, value: float, baseline: float | None, met: bool | None) -> None:
    target = Target(rule, limit, "t")
    assert target.met(Summary.single(value), None if baseline is None else Summary.single(baseline)) is met


def results(*figures: Figure, failures: tuple[str, ...] = ()) -> Results:
    machine = Machine(2, 4096, "6.1.0", "docker", "20.10.24", "3.11.7")
    return Results(
        "abc",
        "2026-01-01T00:00:00+00:00",
        12.0,
        machine,
        "python -m containai.bench",
        3,
        False,
        figures,
        failures,
    )


LAUNCH = Figure(
    "launch.restricted",
    "restricted | launch",
    "s",
    Summary(0.9, 0.8, 1.2, 3),
    Summary(0.3, 0.25, 0.4, 3),
    "the floor",
    Target(Rule.RATIO_AT_MOST, 1.5, "<= 1.5x the floor"),
)
COMMIT = Figure(
    "commit.10",
    "commit",
    "s",
    Summary.single(1.5),
    Summary.single(1.0),
    "no commit",
    Target(Rule.DELTA_AT_MOST, 0.3, "adds <= 0.3 s"),
)


def test_the_table_shows_median_spread_ratio_target_and_verdict() -> None:
    table = render_table([LAUNCH, COMMIT])
    rows = table.splitlines()
    assert rows[0].startswith("| Figure | Value: median (min-max) | Baseline | Ratio | Target | Met? |")
    launch = rows[2]
    assert "restricted \\| launch" in launch  # a pipe in a title does not break the table
    assert "0.900 s (0.800-1.200)" in launch and "0.300 s (0.250-0.400): the floor" in launch
    assert "3.00x" in launch and "**missed**" in launch
    assert "+0.500 s" in rows[3]  # a target about a difference shows the difference
    assert len(rows) == 4


def test_the_results_say_where_and_how_and_what_failed() -> None:
    text = render_results(results(LAUNCH, failures=("egress: no network",)))
    assert "2 CPUs (nproc), 4,096 MiB memory, kernel 6.1.0" in text
    assert "Engine: docker 20.10.24" in text
    assert "`python -m containai.bench`" in text
    assert "Targets met: 0 of 1" in text
    assert "- egress: no network" in text


def test_the_json_has_every_figure_with_its_verdict() -> None:
    data = json.loads(render_json(results(LAUNCH, COMMIT)))
    assert data["schema"] == 1 and data["machine"]["nproc"] == 2
    assert set(data["figures"]) == {"launch.restricted", "commit.10"}
    launch = data["figures"]["launch.restricted"]
    assert launch["value"] == {"median": 0.9, "min": 0.8, "max": 1.2, "n": 3}
    assert launch["ratio"] == pytest.approx(3.0)
    assert launch["met"] is False


def test_results_come_back_from_their_json() -> None:
    original = results(LAUNCH, COMMIT, failures=("x: y",))
    again = parse_results(json.loads(render_json(original)))
    assert again == original
    assert render_results(again) == render_results(original)


def point(name: str, files: int, seconds: float) -> Figure:
    return Figure(name, name, "s", Summary.single(seconds), params={"files": files})


def test_series_are_ordered_by_their_parameter() -> None:
    figures = [point("workspace.clone.1000", 1000, 2.0), point("workspace.clone.10", 10, 1.0), LAUNCH]
    assert [(x, s.median) for x, s in series(figures, "workspace.clone.", "files")] == [
        (10, 1.0),
        (1000, 2.0),
    ]


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    figures = [point("workspace.overlay.10", 10, 1.0), point("workspace.overlay.1000", 1000, 1.2)]
    figures += [
        Figure(f"concurrent.{n}", "c", "s", Summary.single(n * 1.0), params={"sessions": n}) for n in (1, 2)
    ]
    written = write_plots(results(*figures), tmp_path)
    assert [p.name for p in written] == ["workspace-setup.png", "concurrent-launch.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_layout_spreads_files_over_folders() -> None:
    paths = layout(1201)
    assert len(paths) == len(set(paths)) == 1201
    assert paths[0] == "README.md"
    folders = {p.rsplit("/", 1)[0] for p in paths[1:]}
    assert len(folders) == -(-1200 // PER_DIRECTORY)
    with pytest.raises(ValueError):
        layout(0)


def test_generate_repo_commits_exactly_that_many_files(tmp_path: Path) -> None:
    repo = generate_repo(tmp_path / "r", 25)
    assert count_files(repo) == 25
    tracked = subprocess.run(
        ["git", "-C", str(repo), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(tracked) == 25
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == ""


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("/bytes/200000000", 200_000_000),
        ("http://allowed.test/bytes/5", 5),
        ("/bytes/5?x=1", 5),
        ("/", None),
        ("/bytes/", None),
        ("/bytes/12345678901", None),
    ],
)
def test_the_fake_upstream_serves_bulk_bytes_on_request(path: str, size: int | None) -> None:
    assert bulk_size(path) == size
