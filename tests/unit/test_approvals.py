"""Domains a repository asks for, and the user's approvals of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from containai.errors import ConfigError
from containai.trust import approve, approved, repo_requests


def test_requests_approvals_round_trip(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".containai").mkdir(parents=True)
    (repo / ".containai" / "config.toml").write_text(
        '[network]\nallow = ["Docs.Example.com.", "*.cdn.test"]\n'
    )
    assert repo_requests(repo) == ("docs.example.com", ".cdn.test")
    store = tmp_path / "config" / "approvals.toml"
    assert approved(store, repo) == ()
    assert approve(store, repo, ["docs.example.com"]) == ("docs.example.com",)
    assert approve(store, repo, [".cdn.test", "docs.example.com"]) == (".cdn.test", "docs.example.com")
    assert approved(store, repo) == (".cdn.test", "docs.example.com")
    assert approved(store, tmp_path / "other") == ()
    assert store.stat().st_mode & 0o777 == 0o600


def test_repo_paths_with_quotes_survive_the_store(tmp_path: Path) -> None:
    repo = tmp_path / 'we"ird\\repo'
    store = tmp_path / "approvals.toml"
    approve(store, repo, ["a.example.com"])
    assert approved(store, repo) == ("a.example.com",)


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    (tmp_path / ".containai").mkdir()
    (tmp_path / ".containai" / "config.toml").write_text('[network]\nallow = ["10.0.0.1"]\n')
    with pytest.raises(ConfigError):
        repo_requests(tmp_path)
    assert repo_requests(tmp_path / "nothing-here") == ()
