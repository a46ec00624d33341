"""The VS Code attach configuration: what it withholds from the container, and what the launch says."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from containai.session import vscode
from containai.session.plan import AGENT_UID

# Each protection the attach configuration must carry, as VS Code spells it.
PROTECTIONS = {
    "dev.containers.copyGitConfig": False,
    "dev.containers.gitCredentialHelperConfigLocation": "none",
    "dev.containers.dockerCredentialHelper": False,
    "dev.containers.mountWaylandSocket": False,
    "git.terminalAuthentication": False,
    "git.useIntegratedAskPass": False,
    "github.gitAuthentication": False,
    "remote.autoForwardPorts": False,
    "remote.restoreForwardedPorts": False,
}
BLANKED = (
    "SSH_AUTH_SOCK",
    "GIT_ASKPASS",
    "VSCODE_GIT_ASKPASS_MAIN",
    "VSCODE_GIT_ASKPASS_NODE",
    "VSCODE_GIT_IPC_HANDLE",
    "REMOTE_CONTAINERS_IPC",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "BROWSER",
)


def test_the_attach_configuration_turns_off_each_forwarding() -> None:
    config = vscode.attach_config(AGENT_UID)
    assert config["workspaceFolder"] == "/workspace" and config["remoteUser"] == "agent"
    settings = config["settings"]
    assert isinstance(settings, dict)
    for key, value in PROTECTIONS.items():
        assert settings.get(key) == value, key
    env = config["remoteEnv"]
    assert isinstance(env, dict)
    for name in BLANKED:
        assert env.get(name) == "", name


def test_a_workspace_of_another_uid_keeps_the_images_user() -> None:
    config = vscode.attach_config(0)
    assert "remoteUser" not in config
    assert config["remoteEnv"] == vscode.attach_config(AGENT_UID)["remoteEnv"]


def test_the_user_settings_are_those_only_the_host_honours() -> None:
    assert set(vscode.USER_SETTINGS) == {k for k in PROTECTIONS if k.startswith("dev.containers.")}


def test_missing_user_settings_reads_the_users_vscode_settings(tmp_path: Path) -> None:
    assert vscode.missing_user_settings(tmp_path) == dict(vscode.USER_SETTINGS)  # no file
    settings = tmp_path / vscode.USER_SETTINGS_FILE
    settings.parent.mkdir(parents=True)
    settings.write_text(
        json.dumps({"dev.containers.copyGitConfig": False, "dev.containers.dockerCredentialHelper": True})
    )
    missing = vscode.missing_user_settings(tmp_path)
    assert "dev.containers.copyGitConfig" not in missing
    assert missing["dev.containers.dockerCredentialHelper"] is False  # set, but to the unsafe value
    settings.write_text(json.dumps(dict(vscode.USER_SETTINGS)))
    assert vscode.missing_user_settings(tmp_path) == {}


@pytest.mark.parametrize("text", ['{// a comment\n"a": 1}', "[1, 2]", "\x00"])
def test_user_settings_that_json_cannot_read_count_as_missing(tmp_path: Path, text: str) -> None:
    settings = tmp_path / vscode.USER_SETTINGS_FILE
    settings.parent.mkdir(parents=True)
    settings.write_text(text)
    assert vscode.missing_user_settings(tmp_path) == dict(vscode.USER_SETTINGS)


def test_the_note_lists_the_settings_to_add_and_what_cannot_be_turned_off() -> None:
    note = vscode.render_attach_note(vscode.USER_SETTINGS)
    assert '"dev.containers.gitCredentialHelperConfigLocation": "none",' in note
    assert '"dev.containers.copyGitConfig": false,' in note
    assert "VS Code does not let ContainAI turn off" in note
    for words in ("channel to your machine", "SSH agent", "ports you forward", "/workspace/.vscode"):
        assert words in note
    # The lines to add paste into settings.json as they are.
    pasted = "{" + "".join(line for line in note.splitlines() if line.startswith('    "')).rstrip(",") + "}"
    assert json.loads(pasted) == dict(vscode.USER_SETTINGS)


def test_the_note_asks_for_nothing_the_user_settings_already_hold() -> None:
    note = vscode.render_attach_note({})
    assert "add to your VS Code user settings" not in note
    assert "dev.containers" not in note
    assert "VS Code does not let ContainAI turn off" in note


def test_the_written_files_hold_the_configuration(tmp_path: Path) -> None:
    # The three fields of a SessionPlan that write_attach_config reads.
    plan = SimpleNamespace(
        name="shell-demo-session-1", image="containai-base:dev", workspace=SimpleNamespace(uid=AGENT_UID)
    )
    written = vscode.write_attach_config(plan, home=tmp_path)  # type: ignore[arg-type]
    storage = tmp_path / vscode.STORAGE
    assert written == [
        storage / "nameConfigs" / "shell-demo-session-1.json",
        storage / "imageConfigs" / "containai-base%3adev.json",
    ]
    for path in written:
        assert json.loads(path.read_text()) == vscode.attach_config(AGENT_UID)
