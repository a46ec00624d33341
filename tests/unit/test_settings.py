"""The one settings object: flag > environment > repository file > user file > default, with sources."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from containai.broker import server
from containai.cli.app import AppContext, run_cli
from containai.cli.main import cli
from containai.config import (
    DEFAULT_MAX_CPUS,
    DEFAULT_PIDS,
    Flags,
    Hooks,
    Paths,
    Settings,
    resolve_settings,
)
from containai.egress.sidecar import Lab
from containai.errors import ConfigError, UsageError
from containai.runtime.fake import FakeRuntime
from containai.session.plan import default_resources


@pytest.fixture(autouse=True)
def _close_log_file() -> Iterator[None]:
    yield
    logger = logging.getLogger("containai")
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "state", tmp_path / "logs")


def user_file(paths: Paths, text: str) -> None:
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text(text, encoding="utf-8")


def repo_file(repo: Path, text: str) -> Path:
    (repo / ".containai").mkdir(parents=True)
    (repo / ".containai" / "config.toml").write_text(text, encoding="utf-8")
    return repo


def resolve(
    paths: Paths,
    flags: Flags | None = None,
    environ: dict[str, str] | None = None,
    *,
    repo: Path | None = None,
    hooks: Hooks | None = None,
) -> Settings:
    return resolve_settings(
        flags or Flags(), environ or {}, paths=paths, cpu_count=lambda: 16, repo=repo, hooks=hooks
    )


def test_defaults_are_one_set(paths: Paths) -> None:
    settings = resolve(paths)
    assert settings.memory.value == 8 * 2**30 and settings.memory.source == "default"
    assert settings.cpus.value == DEFAULT_MAX_CPUS * 10**9
    assert settings.pids.value == DEFAULT_PIDS == 1024
    assert settings.channel.value == "dev"
    assert settings.hooks == Hooks()
    # the session core's own defaults are the same ones
    resources = default_resources(16)
    assert (resources.memory_bytes, resources.nano_cpus, resources.pids) == (
        settings.memory.value,
        settings.cpus.value,
        settings.pids.value,
    )


def test_cpus_default_to_the_host_when_it_has_fewer(paths: Paths) -> None:
    settings = resolve_settings(Flags(), {}, paths=paths, cpu_count=lambda: 2)
    assert settings.cpus.value == 2 * 10**9


def test_precedence_flag_env_repo_user_default(paths: Paths, tmp_path: Path) -> None:
    user_file(paths, "[settings]\nmemory = '2g'\ncpus = 3\npids = 300\nchannel = 'nightly'\n")
    repo = repo_file(tmp_path / "repo", "[settings]\nmemory = '3g'\n")
    settings = resolve(paths, repo=repo)
    assert settings.memory.value == 3 * 2**30
    assert settings.memory.source == f"{repo / '.containai' / 'config.toml'} [settings]"
    assert settings.cpus.value == 3 * 10**9 and settings.cpus.source == f"{paths.config_file} [settings]"
    assert settings.pids.value == 300
    assert settings.channel.value == "nightly"
    env = {"CONTAINAI_EXTRA_DOCKER_ARGS": "--memory 4g --pids-limit 400", "CONTAINAI_CHANNEL": "prod"}
    settings = resolve(paths, environ=env, repo=repo)
    assert settings.memory.value == 4 * 2**30
    assert settings.memory.source == "environment CONTAINAI_EXTRA_DOCKER_ARGS"
    assert settings.pids.value == 400
    assert settings.channel.source == "environment CONTAINAI_CHANNEL"
    settings = resolve(paths, Flags(memory="5g", channel="dev"), environ=env, repo=repo)
    assert settings.memory.value == 5 * 2**30 and settings.memory.source == "flag --memory"
    assert settings.channel.value == "dev" and settings.channel.source == "flag --channel"


def test_the_launchers_name_beats_the_environment_but_not_the_flag(paths: Paths) -> None:
    env = {"CONTAINAI_CHANNEL": "dev"}
    named = Flags(program="run-claude-nightly", program_channel="nightly")
    settings = resolve(paths, named, environ=env)
    assert settings.channel.value == "nightly"
    assert settings.channel.source == "the launcher's name (run-claude-nightly)"
    from dataclasses import replace

    assert resolve(paths, replace(named, channel="prod"), environ=env).channel.value == "prod"


def test_a_repository_may_set_resources_only(paths: Paths, tmp_path: Path) -> None:
    repo = repo_file(tmp_path / "repo", "[settings]\ngateway_upstream = 'http://evil.test'\n")
    with pytest.raises(ConfigError, match="not a setting a repository may set"):
        resolve(paths, repo=repo)


def test_unknown_and_mistyped_user_settings_are_refused(paths: Paths) -> None:
    user_file(paths, "[settings]\nmemroy = '2g'\n")
    with pytest.raises(ConfigError, match="memroy is not a setting"):
        resolve(paths)
    user_file(paths, "[settings]\npids = 'many'\n")
    with pytest.raises(ConfigError, match="wrong type"):
        resolve(paths)


def test_a_bad_value_names_where_it_came_from(paths: Paths) -> None:
    user_file(paths, "[settings]\nmemory = 'lots'\n")
    with pytest.raises(UsageError, match=r"from .*config.toml \[settings\]"):
        resolve(paths)
    paths.config_file.unlink()
    with pytest.raises(ConfigError, match="gate_max_blob"):
        resolve(paths, environ={"CONTAINAI_GATE_MAX_BLOB": "huge"})


def test_labels_merge_environment_and_flags(paths: Paths) -> None:
    settings = resolve(paths, Flags(labels=("b=2",)), environ={"CONTAINAI_LABELS": "a=1"})
    assert dict(settings.labels.value) == {"a": "1", "b": "2"}
    assert settings.labels.source == "environment CONTAINAI_LABELS and flag --label"


def test_test_hooks_are_never_read_from_the_environment_or_a_file(paths: Paths) -> None:
    env = {
        "CONTAINAI_EGRESS_LAB": "network=x,allow-range=10.0.0.0/8",
        "CONTAINAI_CLAUDE_TOKEN_URL": "http://evil.test/token",
        "CONTAINAI_LOGIN_CHECK_SECONDS": "1",
    }
    user_file(paths, "[settings]\nlab = 'x'\n")
    with pytest.raises(ConfigError, match="lab is not a setting"):
        resolve(paths, environ=env)
    paths.config_file.unlink()
    assert resolve(paths, environ=env).hooks == Hooks()
    lab = Lab("fakenet", ("198.18.0.53",), ("198.18.0.0/24",))
    settings = resolve(paths, hooks=Hooks(lab=lab, login_check_seconds=1.0))
    assert settings.hooks.lab == lab
    assert ("login_check_seconds", "1.0", "injected by the test harness") in settings.rows()


def test_settings_are_frozen(paths: Paths) -> None:
    settings = resolve(paths)
    with pytest.raises(AttributeError):
        settings.channel = settings.channel  # type: ignore[misc]  # the point: it is frozen


def test_doctor_shows_the_settings_and_their_sources(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def use_fake(app: AppContext) -> None:
        app._runtime = FakeRuntime(unavailable=True)

    home = tmp_path / "home"
    env = {"CONTAINAI_HOME": str(home), "CONTAINAI_EXTRA_DOCKER_ARGS": "--cpus 1.5"}
    assert run_cli(cli, args=["doctor", "--settings", "--json"], environ=env, extra=use_fake) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["settings"]["cpus"] == {"value": "1.5", "source": "environment CONTAINAI_EXTRA_DOCKER_ARGS"}
    assert data["settings"]["pids"] == {"value": "1024", "source": "default"}
    assert run_cli(cli, args=["doctor", "--settings"], environ=env, extra=use_fake) == 1
    out = capsys.readouterr().out
    assert "settings:" in out
    assert "memory" in out and "8g" in out and "(default)" in out


def test_secret_broker_errors_go_through_the_boundary(capsys: pytest.CaptureFixture[str]) -> None:
    assert server.main([]) == 125
    err = capsys.readouterr().err
    assert err.startswith("error: the following arguments are required")
    assert "hint: see `secret-broker --help`" in err


def test_the_session_broker_errors_go_through_the_boundary() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "containai.broker.session"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 125
    assert result.stderr.startswith("error: the following arguments are required")
    assert "hint: see `containai-session-broker --help`" in result.stderr


def test_the_memory_default_is_one_value_in_two_forms() -> None:
    from containai.config import DEFAULT_MEMORY, DEFAULT_MEMORY_BYTES
    from containai.runtime.base import ContainerSpec
    from containai.session.plan import parse_memory

    assert parse_memory(DEFAULT_MEMORY) == DEFAULT_MEMORY_BYTES
    spec = ContainerSpec(image="i", name="n", command=(), labels={})
    assert (spec.memory_bytes, spec.pids_limit) == (DEFAULT_MEMORY_BYTES, 1024)


def test_the_gate_policy_carries_the_blob_limit_and_host_gits_memory(paths: Paths) -> None:
    default = resolve(paths).gate_policy()
    assert (default.max_blob_bytes, default.git_memory_bytes) == (50 * 2**20, 2 * 2**30)
    user_file(paths, "[settings]\ngate_git_memory = '512m'\n")
    settings = resolve(paths, environ={"CONTAINAI_GATE_MAX_BLOB": "1k"})
    assert (settings.gate_policy().max_blob_bytes, settings.gate_policy().git_memory_bytes) == (
        1024,
        512 * 2**20,
    )
    assert next(row[:2] for row in settings.rows() if row[0] == "gate_git_memory") == (
        "gate_git_memory",
        "512m",
    )
