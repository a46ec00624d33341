"""The benchmark harness keeps working: one quick repetition at small sizes (not a timed test).

It checks that every figure comes out with numbers and that the run left nothing behind; the numbers
themselves are not judged here (CI machines are noisy, and the targets are for docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("built_images")]

QUICK_FIGURES = {
    "cli.version",
    "broker.rate",
    "broker.p50",
    "broker.p99",
    "launch.floor",
    "launch.restricted",
    "launch.squid",
    "workspace.overlay.10",
    "workspace.overlay.1000",
    "workspace.clone.10",
    "workspace.clone.1000",
    "commit.10",
    "commit.1000",
    "egress.download",
    "egress.small.p50",
    "egress.small.p99",
    "memory.agent",
    "memory.proxy",
    "memory.sidecars",
    "memory.session",
    "connect",
    "concurrent.1",
    "concurrent.2",
}


def numbers(summary: dict[str, Any] | None) -> bool:
    return summary is not None and all(
        isinstance(summary[k], int | float) and math.isfinite(summary[k]) for k in ("median", "min", "max")
    )


def test_quick_benchmark_reports_every_figure_and_leaves_nothing(docker_client: Any, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "CONTAINAI_RUNTIME")}
    result = subprocess.run(
        [sys.executable, "-m", "containai.bench", "--quick", "--runtime", "docker", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["quick"] is True and data["failures"] == []
    assert set(data["figures"]) == QUICK_FIGURES
    for name, figure in data["figures"].items():
        assert numbers(figure["value"]), name
        assert figure["baseline"] is None or numbers(figure["baseline"]), name
    assert "| Figure |" in result.stdout
    selector = {"label": f"containai-bench.run={data['run_id']}"}
    assert docker_client.containers.list(all=True, filters=selector) == []
    assert docker_client.networks.list(filters=selector) == []
    assert docker_client.volumes.list(filters=selector) == []
