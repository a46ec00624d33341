"""Whose rights host git runs with when it writes into the user's repository."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def owner_identity(repo: Path) -> dict[str, Any]:
    """``subprocess`` arguments to run as the repository's owner when we are root and it is not ours.

    Otherwise root would leave root-owned refs and objects in a user's .git, which breaks that user's
    own git later (and an overlay workspace, whose agent runs as the owner). Empty otherwise.
    """
    if os.geteuid() != 0:
        return {}
    try:
        stat = repo.stat()
    except OSError:
        return {}
    if stat.st_uid == 0:
        return {}
    return {"user": stat.st_uid, "group": stat.st_gid, "extra_groups": []}
