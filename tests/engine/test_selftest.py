"""`containai selftest` as a user runs it, on each engine: every case holds on a real session, the
run is quick, and nothing of it is left; with one protection switched off, that case breaks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from containai.config import Hooks
from containai.selftest.cases import CASES

from .conftest import CHANNEL, SESSION_SCOPE, Engine
from .lab_cli import install_lab_programs
from .test_sessions import containai

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

SELFTEST_LABEL = "containai.selftest=1"


def leftovers(client: Any) -> list[str]:
    """Every container, volume and network of this test run's selftest sessions."""
    selector = {"label": [SESSION_SCOPE, SELFTEST_LABEL]}
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters=selector)]
    found += [f"volume {v.name}" for v in client.volumes.list(filters=selector)]
    found += [f"network {n.name}" for n in client.networks.list(filters=selector)]
    return found


def test_selftest_holds_every_case_quickly_and_leaves_nothing_behind(
    env: dict[str, str], engine: Engine, record_property: Any
) -> None:
    started = time.monotonic()
    result = containai(env, "selftest", "--json", "--channel", CHANNEL)
    took = time.monotonic() - started
    record_property(f"selftest_seconds_{engine.kind}", round(took, 1))
    print(f"selftest on {engine.kind}: {took:.1f} s")  # the record the brief asks for
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["version"] == 1
    assert [case["id"] for case in report["cases"]] == [case.id for case in CASES]
    assert [c for c in report["cases"] if c["status"] != "held"] == []
    assert report["held"] == len(CASES) and report["broke"] == 0
    if engine.kind == "docker":
        assert took < 60
    assert leftovers(engine.client) == []


def test_selftest_reports_a_protection_that_is_off_with_what_to_change(
    env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    # The same CLI, with the agent's root filesystem made writable in this process only (lab_cli.py).
    weakened = install_lab_programs(tmp_path / "weak-bin", Hooks(), writable_root=True)
    env = {**env, "PATH": f"{weakened}:{env['PATH']}", "COLUMNS": "400"}
    result = containai(env, "selftest", "--channel", CHANNEL)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "broke" in rows["read-only-root"] and "/ is mounted rw" in rows["read-only-root"]
    assert all("held" in row for case, row in rows.items() if case not in ("read-only-root", "", "case"))
    fix = next(case.fix for case in CASES if case.id == "read-only-root")
    assert f"fix: {fix}" in result.stdout
    assert f"{len(CASES) - 1} of {len(CASES)} held" in result.stdout
    assert leftovers(engine.client) == []


@pytest.mark.parametrize("why", ["unknown-agent", "image-missing", "no-engine"])
def test_selftest_that_cannot_run_says_why_and_exits_125(env: dict[str, str], why: str) -> None:
    agent = "shell"
    if why == "unknown-agent":
        agent = "no-such-agent"
    elif why == "image-missing":
        agents = Path(env["CONTAINAI_HOME"]) / "config" / "agents"
        agents.mkdir(parents=True)
        (agents / "ghost.toml").write_text(
            'name = "ghost"\ndescription = "an image never built"\nimage = "containai-test-ghost:none"\n'
            'command = ["bash"]\nprompt_command = ["bash", "-c", "{prompt}"]\nenv = []\nendpoints = []\n'
        )
        agent = "ghost"
    else:
        env = {**env, "CONTAINAI_RUNTIME": "unix:///nonexistent/engine.sock"}
    result = containai(env, "selftest", agent, "--channel", CHANNEL)
    assert result.returncode == 125, result.stdout + result.stderr
    assert "error:" in result.stderr and "hint:" in result.stderr
    if why == "image-missing":
        assert "containai-test-ghost:none" in result.stderr
