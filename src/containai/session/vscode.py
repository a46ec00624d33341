"""VS Code: "Attach to Running Container" on a session lands in /workspace as the agent user.

Dev Containers reads per-container settings from ``nameConfigs/<container name>.json`` and per-image
settings from ``imageConfigs/<image>.json`` in its global storage; we write both.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from containai.session.plan import AGENT_UID, WORKSPACE, SessionPlan

STORAGE = Path(".config/Code/User/globalStorage/ms-vscode-remote.remote-containers")


def attach_config(plan: SessionPlan) -> dict[str, object]:
    config: dict[str, object] = {"workspaceFolder": WORKSPACE}
    if plan.workspace.uid == AGENT_UID:
        config["remoteUser"] = "agent"
    return config


def _write(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def write_attach_config(plan: SessionPlan, *, home: Path) -> list[Path]:
    storage = home / STORAGE
    data = attach_config(plan)
    written = [
        storage / "nameConfigs" / f"{quote(plan.name, safe='').lower()}.json",
        storage / "imageConfigs" / f"{quote(plan.image, safe='').lower()}.json",
    ]
    for path in written:
        _write(path, data)
    return written
