"""What of the repository's folder an overlay workspace hides from the agent.

An overlay's lower layer is the repository's whole folder, so without this the agent would read what
git ignores (``.env``, keys, a build's secrets) and reach any Unix socket or FIFO in the tree (an SSH
agent's, a database's). Each such path gets a whiteout in the overlay's upper layer, the character
device 0:0 that overlayfs reads as "deleted", which an unprivileged user may create (Linux 5.8+).

The user may show ignored files by pattern (``--expose-ignored .env``, ``CONTAINAI_EXPOSE_IGNORED``
or ``expose_ignored`` in their own config; never the repository's config, which is the agent's to
write). Sockets and FIFOs are never shown. A shared clone needs none of this: it holds only what is
committed.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from containai.errors import UsageError

WHITEOUT_MODE = stat.S_IFCHR  # with device 0:0, and no permission bits


def parse_patterns(items: Sequence[str]) -> tuple[str, ...]:
    """Patterns from flags or a comma-separated setting: relative, no ``..``, none empty."""
    found: list[str] = []
    for item in items:
        for raw in item.split(","):
            pattern = raw.strip().strip("/")
            if not raw.strip():
                continue
            if not pattern or raw.strip().startswith("/") or ".." in PurePosixPath(pattern).parts:
                raise UsageError(
                    f"--expose-ignored {raw.strip()!r} is not a pattern inside the repository",
                    hint="give a path or glob relative to the repository's root, e.g. .env or config/*.local",
                )
            found.append(pattern)
    return tuple(dict.fromkeys(found))


def exposed(path: str, patterns: Sequence[str]) -> bool:
    """Whether the user asked to show ``path`` (relative, posix): by its whole path or its name."""
    clean = path.rstrip("/")
    name = PurePosixPath(clean).name
    return any(fnmatch.fnmatchcase(clean, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def hidden_paths(root: Path, ignored: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Relative paths to hide: what git ignores (a folder ends with ``/``) unless exposed, and every
    socket and FIFO in the tree (outside ``.git`` and the hidden folders)."""
    hidden = [path for path in ignored if not exposed(path, patterns)]
    skip = {path.rstrip("/") for path in hidden}
    for folder, dirs, files in os.walk(root):
        relative = Path(folder).relative_to(root)
        dirs[:] = [
            d
            for d in dirs
            if (relative / d).as_posix() not in skip and not (relative == Path() and d == ".git")
        ]
        for name in files:
            path = (relative / name).as_posix()
            if path in skip:
                continue
            try:
                mode = (Path(folder) / name).lstat().st_mode
            except OSError:
                continue
            if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
                hidden.append(path)
    return sorted(set(hidden))


def whiteout(upper: Path, lower: Path, relative: str, uid: int, gid: int) -> None:
    """Hide ``lower/relative`` in the overlay whose upper layer is ``upper``."""
    parts = PurePosixPath(relative.rstrip("/")).parts
    folder = upper
    for i, part in enumerate(parts[:-1]):
        folder = folder / part
        if not folder.exists():
            # Like the lower folder it covers, so the merged view shows the same mode; the agent's.
            mode = stat.S_IMODE(lower.joinpath(*parts[: i + 1]).stat().st_mode)
            folder.mkdir(mode=mode)
            folder.chmod(mode)
            if os.geteuid() == 0:
                os.chown(folder, uid, gid)
    target = folder / parts[-1]
    if not os.path.lexists(target):
        os.mknod(target, WHITEOUT_MODE, os.makedev(0, 0))
