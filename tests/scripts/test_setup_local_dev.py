"""scripts/setup-local-dev.sh and scripts/ensure-engine.sh, run for real in a throwaway HOME."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from containai.cli.programs import launchers

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup-local-dev.sh"
ENSURE = REPO / "scripts" / "ensure-engine.sh"
LAUNCHERS = [program.name for program in launchers()]  # the one table of programs


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    (home / ".bashrc").write_text("# the user's own line\n")
    return home


def setup(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "PATH": os.environ["PATH"],
        # The test's interpreter: same Python, and pip finds the same package indexes.
        "PYTHON": sys.executable,
        **{k: v for k, v in os.environ.items() if k.startswith(("PIP_", "SSL_", "REQUESTS_"))},
    }
    return subprocess.run(
        [str(SETUP), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_check_only_on_a_fresh_home_reports_and_changes_nothing(home: Path) -> None:
    result = setup(home, "--check-only")
    assert result.returncode == 1
    assert "missing virtual environment" in result.stdout
    assert "missing PATH line" in result.stdout
    assert not (home / ".local").exists()
    assert (home / ".bashrc").read_text() == "# the user's own line\n"


def test_install_links_every_launcher_under_three_channel_names(home: Path) -> None:
    result = setup(home)
    assert result.returncode == 0, result.stderr
    bin_dir = home / ".local/share/containai/bin"
    venv_bin = home / ".local/share/containai/venv/bin"
    for launcher in LAUNCHERS:
        for name in (f"{launcher}-dev", launcher, f"{launcher}-nightly"):
            assert (bin_dir / name).readlink() == venv_bin / launcher
            shim = (bin_dir / f"{name}.ps1").read_text()
            assert "wsl.exe" in shim and "--%" in shim
    assert (bin_dir / "containai").readlink() == venv_bin / "containai"


def test_installed_launchers_run_and_know_their_channel(home: Path, tmp_path: Path) -> None:
    bin_dir = home / ".local/share/containai/bin"
    env = {"HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}", "CONTAINAI_HOME": str(home / "ci")}
    for name in ("run-claude-dev", "run-codex-nightly", "launch-agent", "list-agents-dev"):
        helped = subprocess.run([name, "--help"], env=env, capture_output=True, text=True, check=False)
        assert helped.returncode == 0 and f"Usage: {name}" in helped.stdout, helped.stderr
    # The channel comes from the name: the nightly launcher asks for the nightly image, which the tests
    # never build, and says how to build it.
    refused = subprocess.run(
        ["run-codex-nightly", "--prompt", "hi"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 125
    assert "error: image containai-codex:nightly is not built" in refused.stderr, refused.stderr
    assert "containai images build --channel nightly --agents codex" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_second_run_is_idempotent_and_check_only_is_green(home: Path) -> None:
    assert setup(home).returncode == 0
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.count("added by ContainAI setup-local-dev.sh") == 1
    assert (home / ".profile").read_text().count("added by ContainAI setup-local-dev.sh") == 1
    assert bashrc.startswith("# the user's own line\n")
    result = setup(home, "--check-only")
    assert result.returncode == 0, result.stdout
    assert "nothing to do" in result.stdout


def test_bad_option_is_refused(home: Path) -> None:
    result = setup(home, "--frobnicate")
    assert result.returncode == 2
    assert "unknown option --frobnicate" in result.stderr


def test_ensure_engine_stop_ends_only_what_it_recorded(tmp_path: Path) -> None:
    recorded = subprocess.Popen(["sleep", "300"])
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        state = tmp_path / "engines.pids"
        state.write_text(f"{recorded.pid} sleeper\n")
        env = {**os.environ, "CONTAINAI_ENGINE_STATE": str(state)}
        result = subprocess.run(
            [str(ENSURE), "--stop"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 10
        while recorded.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert recorded.poll() is not None
        assert bystander.poll() is None
        assert not state.exists()
    finally:
        for process in (recorded, bystander):
            process.kill()
            process.wait()
