"""Session planning without an engine: agent definitions, names, branches, workspace choice, hardening."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from containai.agents.definition import get_agent, load_agents, parse_agent
from containai.errors import ConfigError, UsageError
from containai.session.extra_args import parse_extra_args
from containai.session.naming import container_name, sanitize
from containai.session.plan import (
    Resources,
    WorkspaceChoice,
    choose_workspace,
    hardened_spec,
    parse_cpus,
    parse_memory,
    render_setup_script,
)
from containai.session.repo import BranchChoice, RepoInfo, choose_branch, discover_repo


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "My Repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "base")
    return path


def info(path: Path) -> RepoInfo:
    found = discover_repo(path, path)
    assert found is not None
    return found


# Agents


def test_builtin_agents_load_with_their_commands() -> None:
    agents = load_agents(None)
    assert {"claude", "codex", "copilot", "shell"} <= set(agents)
    assert agents["claude"].prompt_argv("hi there") == ["claude", "-p", "hi there"]
    assert agents["codex"].prompt_argv("x")[:2] == ["codex", "exec"]
    assert agents["claude"].image_ref("dev") == "containai-claude:dev"
    assert agents["shell"].image_ref("nightly") == "containai-base:nightly"


def test_user_agents_are_added_and_may_replace_builtins(tmp_path: Path) -> None:
    (tmp_path / "aider.toml").write_text(
        'name = "aider"\nimage = "my/aider:1"\ncommand = ["aider"]\nprompt_command = ["aider", "--message", "{prompt}"]\n'
    )
    (tmp_path / "shell.toml").write_text(
        'name = "shell"\nimage = "base"\ncommand = ["zsh"]\nprompt_command = ["zsh", "-c", "{prompt}"]\n'
    )
    agents = load_agents(tmp_path)
    assert agents["aider"].image_ref("dev") == "my/aider:1"
    assert agents["shell"].command == ("zsh",)
    assert agents["shell"].source == str(tmp_path / "shell.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "Bad Name"\nimage = "x"\ncommand = ["x"]\nprompt_command = ["{prompt}"]', "`name`"),
        ('name = "a"\nimage = "x"\ncommand = ["x"]\nprompt_command = ["x"]', "{prompt}"),
        ('name = "a"\nimage = "x"\ncommand = "x"\nprompt_command = ["{prompt}"]', "list of strings"),
        (
            'name = "a"\nimage = "x"\ncommand = ["x"]\nprompt_command = ["{prompt}"]\nenv = ["bad-name"]',
            "not a variable",
        ),
        (
            'name = "a"\nimage = "x"\ncommand = ["x"]\nprompt_command = ["{prompt}"]\nprivileged = true',
            "unknown key",
        ),
        ("name = [", "not valid TOML"),
    ],
)
def test_bad_agent_files_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "a.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")) as caught:
        load_agents(tmp_path)
    assert caught.value.hint


def test_unknown_agent_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        get_agent("nope", tmp_path)
    assert "claude" in (caught.value.hint or "") and str(tmp_path) in (caught.value.hint or "")


def test_prompt_is_one_argument_never_a_shell_string() -> None:
    agent = parse_agent(
        {"name": "a", "image": "x", "command": ["a"], "prompt_command": ["a", "{prompt}"]}, "t"
    )
    assert agent.prompt_argv("$(rm -rf /); `x`") == ["a", "$(rm -rf /); `x`"]


# Names


def test_container_names_follow_the_engine_rules() -> None:
    assert sanitize("Claude/Session-3 Ä!") == "claude-session-3"
    name = container_name("claude", "My.Repo", "claude/session-3", taken=lambda _: False)
    assert name == "claude-my.repo-claude-session-3"
    long = container_name("claude", "r" * 100, "b" * 100, taken=lambda _: False)
    assert len(long) <= 63 and long[0].isalnum()


def test_container_name_clash_gets_a_suffix() -> None:
    taken = {"claude-repo-main"}
    name = container_name("claude", "repo", "main", taken=taken.__contains__)
    assert name != "claude-repo-main" and name.startswith("claude-repo-main-")


# Branches


def test_session_branches_count_up_and_are_reserved(repo: Path) -> None:
    first = choose_branch(info(repo), "claude", requested=None, use_current=False, force=False)
    second = choose_branch(info(repo), "claude", requested=None, use_current=False, force=False)
    assert (first.name, second.name) == ("claude/session-1", "claude/session-2")
    assert git(repo, "rev-parse", "claude/session-2") == git(repo, "rev-parse", "main")
    other = choose_branch(info(repo), "codex", requested=None, use_current=False, force=False)
    assert other.name == "codex/session-1"


def test_a_number_taken_meanwhile_is_skipped(repo: Path) -> None:
    # The listing said session-1 was free, but another launch reserved it first.
    git(repo, "branch", "claude/session-1")
    choice = choose_branch(info(repo), "claude", requested=None, use_current=False, force=False, existing=[])
    assert choice.name == "claude/session-2"


def test_existing_branch_needs_force_and_unmerged_work_is_archived(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "unmerged")
    unmerged = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "main")
    with pytest.raises(UsageError, match="already exists"):
        choose_branch(info(repo), "claude", requested="feature", use_current=False, force=False)
    fixed = datetime(2026, 11, 27, 1, 2, 3, tzinfo=UTC)
    choice = choose_branch(
        info(repo), "claude", requested="feature", use_current=False, force=True, now=lambda: fixed
    )
    assert choice.archived == "feature-archived-20261127T010203Z"
    assert git(repo, "rev-parse", choice.archived).strip() == unmerged
    assert git(repo, "rev-parse", "feature") == git(repo, "rev-parse", "main")


def test_merged_branch_is_replaced_without_an_archive(repo: Path) -> None:
    git(repo, "branch", "done")
    choice = choose_branch(info(repo), "claude", requested="done", use_current=False, force=True)
    assert choice.archived is None
    assert "archived" not in git(repo, "branch")


@pytest.mark.parametrize("name", ["bad..name", "-x", "a b", "x.lock", "ends/", "@"])
def test_bad_branch_names_are_refused(repo: Path, name: str) -> None:
    with pytest.raises(UsageError, match="not a valid branch name"):
        choose_branch(info(repo), "claude", requested=name, use_current=False, force=False)


def test_use_current_branch(repo: Path) -> None:
    choice = choose_branch(info(repo), "claude", requested=None, use_current=True, force=False)
    assert choice == BranchChoice("main", git(repo, "rev-parse", "HEAD").strip(), created=False)
    with pytest.raises(UsageError):
        choose_branch(info(repo), "claude", requested="x", use_current=True, force=False)
    git(repo, "checkout", "-q", "--detach")
    with pytest.raises(UsageError, match="detached"):
        choose_branch(info(repo), "claude", requested=None, use_current=True, force=False)


def test_discovery_reports_dirty_paths_and_finds_the_root(repo: Path) -> None:
    (repo / "sub").mkdir()
    (repo / "new file.txt").write_text("x")
    found = discover_repo(None, repo / "sub")
    assert found is not None and found.root == repo.resolve()
    assert found.dirty == ("new file.txt",)
    assert discover_repo(None, repo.parent) is None
    with pytest.raises(UsageError, match="not inside a git repository"):
        discover_repo(repo.parent, repo.parent)


# Workspace and hardening


def test_workspace_choice(repo: Path) -> None:
    plain = RepoInfo(Path("/src/app"), "app", "0" * 40, "main", ())
    assert choose_workspace(plain, owner=(1000, 1000), local_engine=True, rootless=False).mode == "overlay"
    assert choose_workspace(plain, owner=(1234, 99), local_engine=True, rootless=False).uid == 1234
    root_owned = choose_workspace(plain, owner=(0, 0), local_engine=True, rootless=False)
    assert (root_owned.mode, root_owned.uid) == ("clone", 1000) and "root" in root_owned.reason
    assert choose_workspace(plain, owner=(1000, 1000), local_engine=True, rootless=True).mode == "clone"
    assert choose_workspace(plain, owner=(1000, 1000), local_engine=False, rootless=False).mode == "clone"
    comma = RepoInfo(Path("/src/a,b"), "a,b", "0" * 40, "main", ())
    assert choose_workspace(comma, owner=(1000, 1000), local_engine=True, rootless=False).mode == "clone"
    assert choose_workspace(None, owner=None, local_engine=True, rootless=False).mode == "empty"
    forced = choose_workspace(plain, owner=(1000, 1000), local_engine=True, rootless=False, forced="clone")
    assert forced.mode == "clone"
    with pytest.raises(UsageError):
        choose_workspace(plain, owner=(0, 0), local_engine=True, rootless=False, forced="overlay")


def test_hardened_spec_drops_everything_and_never_runs_as_root() -> None:
    spec = hardened_spec(
        image="i",
        name="n",
        command=["x"],
        labels={},
        uid=1000,
        gid=1000,
        mounts=[],
        resources=Resources(2**30, 10**9, 100),
        environment={},
    )
    assert spec.cap_drop == ("ALL",) and spec.cap_add == ()
    assert spec.security_opt == ("no-new-privileges:true",)
    assert spec.read_only and spec.network_mode == "none" and spec.user == "1000:1000"
    assert all({"noexec", "nosuid", "nodev"} <= set(o.split(",")) for o in spec.tmpfs.values())
    assert ("core", 0, 0) in spec.ulimits and spec.pids_limit == 100
    with pytest.raises(UsageError):
        hardened_spec(
            image="i",
            name="n",
            command=["x"],
            labels={},
            uid=0,
            gid=0,
            mounts=[],
            resources=Resources(2**30, 10**9),
            environment={},
        )


def test_setup_script_quotes_what_it_is_given() -> None:
    script = render_setup_script(
        WorkspaceChoice("clone", "", 1000, 1000),
        BranchChoice("a/b", "f" * 40, True),
        git_name="O'Brien; rm -rf /",
        git_email="x@y",
    )
    assert "git config user.name 'O'\"'\"'Brien; rm -rf /'" in script
    assert "git clone --quiet --shared --no-checkout /repo /workspace" in script


def test_resource_flags() -> None:
    assert parse_memory("4g") == 4 * 2**30 and parse_memory("512m") == 512 * 2**20
    assert parse_cpus("0.5", 8) == 5 * 10**8 and parse_cpus(None, 2) == 2 * 10**9
    for bad in ("lots", "1m"):
        with pytest.raises(UsageError):
            parse_memory(bad)
    with pytest.raises(UsageError):
        parse_cpus("-1", 2)


@pytest.mark.parametrize(
    "text",
    [
        "--privileged",
        "--cap-add=SYS_ADMIN",
        "--security-opt seccomp=unconfined",
        "--network=host",
        "--pid host",
        "-v /var/run/docker.sock:/s",
        "--device /dev/kmsg",
        "-e SECRET=x",
        "--pids-limit -1",
        "--pids-limit 0",
        "--userns host",
        "--mount type=bind,src=/,dst=/h",
        "--cpus",
        "make",
        "'unbalanced",
    ],
)
def test_extra_docker_args_refuse_anything_that_weakens(text: str) -> None:
    with pytest.raises(ConfigError, match="CONTAINAI_EXTRA_DOCKER_ARGS"):
        parse_extra_args(text)


def test_extra_docker_args_accept_resources() -> None:
    extra = parse_extra_args("--cpus 1.5 --memory=2g --pids-limit 256")
    assert (extra.cpus, extra.memory, extra.pids_limit) == ("1.5", "2g", 256)
    assert parse_extra_args("") == parse_extra_args("   ")


def test_gateway_config_file_is_written_through_base64(tmp_path: Path) -> None:
    import base64
    import subprocess as sp

    script = render_setup_script(
        WorkspaceChoice("empty", "", 1000, 1000),
        None,
        git_name="n",
        git_email="e",
        home_files={".codex/config.toml": 'base_url = "http://127.0.0.1:8787/v1"\n# it\'s $HOME `x`\n'},
    )
    line = next(line for line in script.splitlines() if "base64 -d" in line)
    encoded = line.split("echo ")[1].split(" ")[0]
    assert base64.b64decode(encoded).decode().startswith('base_url = "http://127.0.0.1:8787/v1"')
    # Run just that line with HOME pointed at a tmp dir: the file appears with the exact content.
    home = tmp_path / "home"
    sp.run(["bash", "-c", line.replace("/home/agent", str(home))], check=True)
    assert (
        home / ".codex/config.toml"
    ).read_text() == 'base_url = "http://127.0.0.1:8787/v1"\n# it\'s $HOME `x`\n'


def test_builtin_gateways() -> None:
    agents = load_agents(None)
    claude, codex = agents["claude"].gateway, agents["codex"].gateway
    assert claude is not None and claude.header == "x-api-key" and claude.config is None
    assert codex is not None and codex.scheme == "bearer" and codex.config_path == ".codex/config.toml"
    assert codex.config is not None and "{base_url}" in codex.config
    copilot = agents["copilot"].gateway
    assert copilot is not None and copilot.base_url_env == "COPILOT_PROVIDER_BASE_URL"
    # Its bring-your-own-key settings are set only when the gateway is in use.
    assert copilot.set_env["COPILOT_PROVIDER_TYPE"] == "openai"
    assert "COPILOT_PROVIDER_TYPE" not in agents["copilot"].set_env


@pytest.mark.parametrize("path", ["/etc/passwd", "../escape", ".codex/../../x"])
def test_gateway_config_path_stays_in_home(tmp_path: Path, path: str) -> None:
    (tmp_path / "a.toml").write_text(
        'name = "a"\nimage = "x"\ncommand = ["x"]\nprompt_command = ["{prompt}"]\n[gateway]\n'
        'secret = "K"\nupstream = "https://u.example"\nheader = "x"\nbase_url_env = "B"\nkey_env = "K"\n'
        'allow = ["POST /v1/x"]\n'
        f'config_path = "{path}"\nconfig = "x"\n'
    )
    with pytest.raises(ConfigError, match="relative to HOME"):
        load_agents(tmp_path)


def test_claude_falls_back_to_a_subscription_token_with_its_own_header_and_placeholder() -> None:
    gateway = load_agents(None)["claude"].gateway
    assert gateway is not None
    key, subscription = gateway.choices()
    assert (key.secret, key.header, key.scheme, key.key_env) == (
        "ANTHROPIC_API_KEY",
        "x-api-key",
        "plain",
        "ANTHROPIC_API_KEY",
    )
    assert (subscription.secret, subscription.header, subscription.scheme, subscription.key_env) == (
        "CLAUDE_CODE_OAUTH_TOKEN",
        "authorization",
        "bearer",
        "CLAUDE_CODE_OAUTH_TOKEN",
    )
    assert subscription.login == "claude" and key.login is None  # the host's own login, if no token
    # Same upstream and base URL: only the credential differs.
    assert (subscription.upstream, subscription.base_url_env) == (key.upstream, key.base_url_env)


@pytest.mark.parametrize(
    "table",
    [
        'secret = "T"',  # no key_env
        'secret = "T"\nkey_env = "T"\nscheme = "digest"',
        'secret = "not a name"\nkey_env = "T"',
        'secret = "T"\nkey_env = "T"\nupstream = "https://elsewhere.example"',  # not its to change
        'secret = "T"\nkey_env = "T"\nlogin = "codex"',  # a login ContainAI cannot read and refresh
    ],
)
def test_bad_subscription_tables_are_refused(tmp_path: Path, table: str) -> None:
    (tmp_path / "a.toml").write_text(
        'name = "a"\nimage = "x"\ncommand = ["x"]\nprompt_command = ["{prompt}"]\n[gateway]\n'
        'secret = "K"\nupstream = "https://u.example"\nheader = "x"\nbase_url_env = "B"\nkey_env = "K"\n'
        'allow = ["POST /v1/x"]\n'
        f"[gateway.subscription]\n{table}\n"
    )
    with pytest.raises(ConfigError, match="subscription"):
        load_agents(tmp_path)
