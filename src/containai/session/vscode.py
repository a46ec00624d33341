"""VS Code: "Attach to Running Container" on a session, with as little of the host as VS Code allows.

Dev Containers reads per-container settings from ``nameConfigs/<container name>.json`` and per-image
settings from ``imageConfigs/<image>.json`` in its global storage; we write both. By default an attach
copies the user's ``~/.gitconfig`` in, answers git's credential requests from the host's credential
helper, forwards the host's SSH agent, GPG agent, X11 display and Wayland socket, and lets the git and
GitHub extensions hand the user's sign-in to git in the container. The configuration below turns off
what a configuration file can turn off; :func:`render_attach_note` says what it cannot.

Where each setting is read:

- ``remoteEnv``: the environment of the VS Code server, its terminals, tasks and extensions in the
  container. Blanking a variable hides a forwarded socket from programs that look for it by name; the
  socket itself is still there (VS Code has no setting that stops it).
- ``settings``: written into the container's machine settings, read by the extensions that run in the
  container (git, GitHub, port forwarding).
- :data:`USER_SETTINGS`: read by the Dev Containers extension on the host before it attaches. We put
  them in the configuration too, but the container can rewrite its own machine settings, so they hold
  only in the user's own VS Code settings: the launch says which are missing there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from containai.session.plan import AGENT_UID, WORKSPACE, SessionPlan

STORAGE = Path(".config/Code/User/globalStorage/ms-vscode-remote.remote-containers")
USER_SETTINGS_FILE = Path(".config/Code/User/settings.json")

# Variables through which VS Code points programs in the container at a host-side helper.
BLANKED_ENV = (
    "SSH_AUTH_SOCK",  # the host's SSH agent, forwarded to /tmp/vscode-ssh-auth-*.sock
    "GIT_ASKPASS",  # the git extension's askpass: answers with the user's sign-in
    "VSCODE_GIT_ASKPASS_MAIN",
    "VSCODE_GIT_ASKPASS_NODE",
    "VSCODE_GIT_ASKPASS_EXTRA_ARGS",
    "VSCODE_GIT_IPC_HANDLE",
    "REMOTE_CONTAINERS_IPC",  # Dev Containers' channel to the host: git credentials, opening URLs
    "GPG_AGENT_INFO",
    "DISPLAY",  # the host's X server, forwarded to /tmp/.X11-unix
    "WAYLAND_DISPLAY",
    "BROWSER",  # a helper that opens URLs in the host's browser
)

# Read by the extensions in the container.
CONTAINER_SETTINGS: Mapping[str, object] = {
    "git.terminalAuthentication": False,  # no askpass in terminals
    "git.useIntegratedAskPass": False,
    "github.gitAuthentication": False,  # the user's GitHub sign-in never answers git
    "remote.autoForwardPorts": False,  # a port the agent opens is not published on the host
    "remote.restoreForwardedPorts": False,
}

# Read by the Dev Containers extension on the host: only the user's settings hold them.
USER_SETTINGS: Mapping[str, object] = {
    "dev.containers.copyGitConfig": False,
    "dev.containers.gitCredentialHelperConfigLocation": "none",
    "dev.containers.dockerCredentialHelper": False,
    "dev.containers.mountWaylandSocket": False,
}

# What VS Code gives a container it attaches to and has no setting to withhold.
NOT_TURNED_OFF = (
    "VS Code's server keeps its channel to your machine: extensions in the container can open URLs "
    "in your browser and read your clipboard",
    "it still forwards your SSH agent and X display when your VS Code has them (the variables are "
    "blanked, the sockets remain): start VS Code without SSH_AUTH_SOCK",
    "ports you forward reach the container from your machine, past the session's egress rules",
    "extensions you install in the container read what the agent can, and /workspace/.vscode is the "
    "agent's: do not trust that folder when VS Code asks",
)


def user_home(environ: Mapping[str, str]) -> Path:
    """The home folder whose VS Code configuration the launch writes and reads."""
    return Path(environ.get("HOME", "~")).expanduser()


def attach_config(workspace_uid: int) -> dict[str, object]:
    """The attach configuration for a session whose workspace belongs to ``workspace_uid``."""
    config: dict[str, object] = {"workspaceFolder": WORKSPACE}
    if workspace_uid == AGENT_UID:
        config["remoteUser"] = "agent"
    config["remoteEnv"] = dict.fromkeys(BLANKED_ENV, "")
    config["settings"] = {**USER_SETTINGS, **CONTAINER_SETTINGS}
    return config


def _write(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def write_attach_config(plan: SessionPlan, *, home: Path) -> list[Path]:
    storage = home / STORAGE
    data = attach_config(plan.workspace.uid)
    written = [
        storage / "nameConfigs" / f"{quote(plan.name, safe='').lower()}.json",
        storage / "imageConfigs" / f"{quote(plan.image, safe='').lower()}.json",
    ]
    for path in written:
        _write(path, data)
    return written


def missing_user_settings(home: Path) -> dict[str, object]:
    """The :data:`USER_SETTINGS` that the user's VS Code settings do not already hold.

    A settings file that is absent, or that plain JSON cannot read (VS Code allows comments), counts
    as holding none of them: the note then lists them all, which is never wrong.
    """
    try:
        present = json.loads((home / USER_SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        present = {}
    if not isinstance(present, dict):
        present = {}
    return {key: value for key, value in USER_SETTINGS.items() if present.get(key) != value}


def render_attach_note(missing: Mapping[str, object]) -> str:
    """The block the launch prints: what the attach configuration turned off, and what it could not."""
    lines = [
        "VS Code attach: ContainAI's attach configuration blanks SSH_AUTH_SOCK, git askpass, the Dev "
        "Containers IPC and DISPLAY in the container, and turns off VS Code's git and GitHub sign-in "
        "and automatic port forwarding there.",
    ]
    if missing:
        lines.append(
            "  So that VS Code copies in neither your git config nor your credential helpers, add to "
            "your VS Code user settings (it honours these only there; see docs/security.md):"
        )
        lines += [f"    {json.dumps(key)}: {json.dumps(value)}," for key, value in missing.items()]
    lines.append("  VS Code does not let ContainAI turn off:")
    lines += [f"  - {item}" for item in NOT_TURNED_OFF]
    return "\n".join(lines)
