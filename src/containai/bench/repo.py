"""Generated git repositories of a given number of files, owned by root or by a user.

The layout is pure (``layout``), so its shape is tested without writing anything: at most
``PER_DIRECTORY`` files a folder, like a real tree, and a few bytes each (the benchmark is about
file counts, which is what a workspace set-up scales with).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PER_DIRECTORY = 500
# gc.auto=0: no background `git gc` detaches from a commit and competes with the measurements.
IDENTITY = ("-c", "user.name=ContainAI bench", "-c", "user.email=bench@containai.invalid", "-c", "gc.auto=0")


def layout(files: int) -> list[str]:
    """Relative paths of ``files`` files: README.md first, then src/dNNNN/fNNNNNN.txt."""
    if files < 1:
        raise ValueError("a repository needs at least one file")
    paths = ["README.md"]
    paths += [f"src/d{i // PER_DIRECTORY:04d}/f{i:06d}.txt" for i in range(files - 1)]
    return paths


def content(path: str) -> bytes:
    return f"{path}\n".encode()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *IDENTITY, *args], capture_output=True, text=True, check=True
    ).stdout


def generate_repo(repo: Path, files: int, *, owner: int | None = None) -> Path:
    """A repository at ``repo`` with ``files`` files in one commit on ``main``; chowned to ``owner``."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    made: set[Path] = set()
    for relative in layout(files):
        path = repo / relative
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(content(relative))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{files} generated files")
    git(repo, "config", "gc.auto", "0")  # the sessions' commits brought home must not start one either
    git(repo, "repack", "-a", "-d", "-q")  # packed, as a real repository is (and a clone reads)
    if owner is not None:
        subprocess.run(["chown", "-R", f"{owner}:{owner}", str(repo)], check=True)
        # chown changed every file's ctime: refresh the index, as the owner's own git would have it,
        # or each overlay session would re-hash every file (seconds at 100,000 files).
        git(repo, "-c", "safe.directory=*", "update-index", "-q", "--refresh")
        os.chown(repo / ".git" / "index", owner, owner)
    return repo


def count_files(repo: Path) -> int:
    """Files in the work tree, .git excluded (a check that generation did what it says)."""
    total = 0
    for _root, dirs, names in os.walk(repo):
        if ".git" in dirs:
            dirs.remove(".git")
        total += len(names)
    return total
