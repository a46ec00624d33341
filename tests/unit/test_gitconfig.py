"""The session's copy of the repository's git config carries no credential."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from containai.workspace.gitconfig import render_safe_git_config, strip_userinfo

SECRET = "ghp_SECRETSECRET0123"  # noqa: S105  # a canary, not a credential

HOSTILE = f"""[core]
\trepositoryformatversion = 1
[extensions]
\tobjectformat = sha256
[remote "origin"]
\turl = https://x-access-token:{SECRET}@github.com/owner/repo.git
\tpushurl = https://{SECRET}@github.com/owner/repo.git
\tfetch = +refs/heads/*:refs/remotes/origin/*
[remote "mirror"]
\turl = ssh://git@example.test:2222/owner/repo.git
[url "https://bot:{SECRET}@github.com/"]
\tinsteadOf = https://github.com/
[http "https://github.com/"]
\textraheader = AUTHORIZATION: basic {SECRET}
[http]
\textraHeader = Authorization: bearer \\
{SECRET}
\tsslVerify = true
[http "https://example.test/"] extraheader = X-Token: {SECRET}
[credential]
\thelper = "!f() {{ echo password={SECRET}; }}; f"
[credential "https://github.com"]
\tusername = bot
[submodule "lib"]
\turl = https://u:{SECRET}@example.test/lib.git
[branch "main"]
\tremote = origin
"""


def test_no_credential_is_left_and_the_rest_is_kept(tmp_path: Path) -> None:
    safe = render_safe_git_config(HOSTILE)
    assert SECRET not in safe
    assert "credential" not in safe.lower() and "extraheader" not in safe.lower()
    config = tmp_path / "config"
    config.write_text(safe)

    def get(key: str) -> str:
        return subprocess.run(
            ["git", "config", "--file", str(config), "--get", key], capture_output=True, text=True, check=True
        ).stdout.strip()

    # Git still reads it, and everything else is as it was.
    assert get("extensions.objectformat") == "sha256"
    assert get("remote.origin.url") == "https://github.com/owner/repo.git"
    assert get("remote.origin.pushurl") == "https://github.com/owner/repo.git"
    assert get("remote.origin.fetch") == "+refs/heads/*:refs/remotes/origin/*"
    assert get("remote.mirror.url") == "ssh://example.test:2222/owner/repo.git"
    assert get("url.https://github.com/.insteadof") == "https://github.com/"
    assert get("http.sslverify") == "true"
    assert get("submodule.lib.url") == "https://example.test/lib.git"
    assert get("branch.main.remote") == "origin"


def test_an_honest_config_is_unchanged() -> None:
    honest = '[core]\n\tbare = false\n[remote "origin"]\n\turl = git@github.com:o/r.git\n'
    assert render_safe_git_config(honest) == honest


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@host/p", "https://host/p"),
        ("HTTP://tok@host:8080/p", "HTTP://host:8080/p"),
        ("git+ssh://me@host/p", "git+ssh://host/p"),
        ("https://host/p@v1", "https://host/p@v1"),
        ("/srv/git/repo.git", "/srv/git/repo.git"),
    ],
)
def test_strip_userinfo(url: str, shown: str) -> None:
    assert strip_userinfo(url) == shown
