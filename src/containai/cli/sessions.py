"""The session commands: `containai run`, `launch`, `connect`, `list` and `remove`.

The launchers users know (run-claude, launch-agent, ...) are aliases of these (see programs.toml).
Flags arrive as a ``SessionOptions``; settings are resolved once here, at the boundary, and handed to
``containai.session`` inside a ``SessionRequest``. The session modules (and the engine client they
use) are imported in the command bodies, so that `--help` stays fast.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from containai.cli.app import AppContext
from containai.cli.options import SCOPE_HELP, SessionOptions, label_option, session_options
from containai.config import Settings
from containai.errors import EXIT_WORK_KEPT, UsageError

if TYPE_CHECKING:
    from containai.agents.definition import AgentDef
    from containai.gateway.login import ClaudeLogin
    from containai.runtime.base import ContainerRuntime
    from containai.secrets.value import Secret
    from containai.session.manager import Reporter, SessionRequest

pass_app = click.make_pass_decorator(AppContext)
CONTEXT = {"help_option_names": ["-h", "--help"]}


def reporter(app: AppContext) -> Reporter:
    from containai.cli.render import ConsoleReporter

    return ConsoleReporter(app.err)


def _repo_root(repo: Path | None) -> Path | None:
    """The repository a session would work on, for its settings file (None when there is none)."""
    from containai.hostgit import HostGit

    start = (repo or Path.cwd()).resolve()
    if not start.is_dir():
        return None
    return HostGit(start).toplevel()


def session_settings(app: AppContext, root: Path | None, options: SessionOptions) -> Settings:
    return app.settings(
        repo=root,
        channel=options.channel,
        memory=options.memory,
        cpus=options.cpu,
        disk_limit=options.disk_limit,
        labels=options.labels,
        expose_ignored=options.expose_ignored,
    )


def build_request(
    app: AppContext,
    agent_name: str,
    repo: Path | None,
    mode: str,
    options: SessionOptions,
    *,
    repository: bool = True,
) -> SessionRequest:
    """The request for a session, with every input checked before the engine is touched.

    ``repository=False``: a session on no repository, whatever the working directory is (selftest).
    """
    from containai.agents.definition import get_agent
    from containai.session.commands import find_repo
    from containai.session.disk import DiskLimit
    from containai.session.manager import SessionRequest
    from containai.session.plan import Resources

    agent = get_agent(agent_name, app.paths.agents_dir)
    found = (
        find_repo(repo, Path.cwd(), paths=app.paths, environ=app.environ, branch=options.branch)
        if repository
        else None
    )
    settings = session_settings(app, found.root if found else None, options)
    credential = model_credential(app, settings, agent, options.network_proxy)
    return SessionRequest(
        agent=credential.agent,
        repo_path=repo,
        cwd=Path.cwd(),
        repo=found,
        channel=settings.channel.value,
        mode=mode,
        network_proxy=options.network_proxy,
        branch=options.branch,
        use_current_branch=options.use_current_branch,
        push=options.push,
        force=options.force,
        name=options.name,
        resources=Resources(settings.memory.value, settings.cpus.value, settings.pids.value),
        workspace_mode=settings.workspace.value,
        expose_ignored=settings.expose_ignored.value,
        allow_domains=options.allow_domains,
        network=settings.network.value,
        lab=settings.hooks.lab,
        approvals_file=settings.paths.value.approvals_file,
        credential=credential.secret,
        login=credential.login,
        gateway_upstream=settings.gateway_upstream.value,
        gate=settings.gate_policy(),
        scope=settings.labels.value,
        disk=DiskLimit(settings.disk_limit.value, settings.disk_files.value),
        bounds=settings.bounds,
    )


def ensure_proxy_image(app: AppContext, request: SessionRequest) -> None:
    """The proxy image is built on first use, with progress, rather than asked for as a manual step."""
    from containai.cli.building import build_images
    from containai.images.catalog import image_tag

    if request.network_proxy != "squid" or app.runtime().image(image_tag("proxy", request.channel)):
        return
    reporter(app).note(f"building the egress proxy image for the {request.channel} channel (once)")
    build_images(app, ["proxy"], channel=request.channel)


@dataclass(frozen=True)
class ModelCredential:
    """What the agent's gateway gets: a stored secret, or the host's own login of the CLI."""

    agent: AgentDef  # with the gateway set up for the kind found
    secret: Secret | None = None
    login: ClaudeLogin | None = None


def model_credential(
    app: AppContext, settings: Settings, agent: AgentDef, network_proxy: str
) -> ModelCredential:
    """The agent's model credential from the host, in order: an API key, a subscription token, the
    CLI's own login on the host; a warning, saying what to store, when there is none."""
    from containai.gateway.login import CHECK_SECONDS, CLAUDE_TOKEN_URL, ClaudeLogin
    from containai.secrets.store import default_sources, resolve_secret

    if agent.gateway is None or network_proxy != "squid":
        return ModelCredential(agent)
    sources = default_sources(app.paths, app.environ)
    for choice in agent.gateway.choices():
        found = resolve_secret(choice.secret, sources)
        if found is not None:
            return ModelCredential(replace(agent, gateway=choice), secret=found[0])
    hooks = settings.hooks
    for choice in agent.gateway.choices():
        if choice.login != "claude":
            continue
        login = ClaudeLogin.from_env(
            app.environ,
            token_url=hooks.claude_token_url or CLAUDE_TOKEN_URL,
            check_seconds=hooks.login_check_seconds or CHECK_SECONDS,
        )
        if login is not None:
            reporter(app).note(f"using the host's Claude login ({login.path}), refreshed on the host")
            return ModelCredential(replace(agent, gateway=choice), login=login)
    names = " or ".join(choice.secret for choice in agent.gateway.choices())
    reporter(app).warn(
        f"no {names} on the host: {agent.name} runs without a model credential "
        f"(store one with `containai secrets set {agent.gateway.secret}`)"
    )
    return ModelCredential(agent)


def stored_model_key(app: AppContext, agent: AgentDef) -> Secret | None:
    """The agent's model key stored on the host (its gateway's first choice found), or None."""
    from containai.secrets.store import default_sources, resolve_secret

    if agent.gateway is None:
        return None
    sources = default_sources(app.paths, app.environ)
    for choice in agent.gateway.choices():
        if (found := resolve_secret(choice.secret, sources)) is not None:
            return found[0]
    return None


def _write_output(stream: str, data: bytes) -> None:
    target = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
    target.write(data)
    target.flush()


class CommandAfterDashes(click.Command):
    """Keeps what follows ``--`` as the command to run, apart from REPO (click would merge them)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["containai.command"] = tuple(args[cut + 1 :])
            args = args[:cut]
        return super().parse_args(ctx, args)


@click.command(cls=CommandAfterDashes, context_settings=CONTEXT)
@click.argument("agent")
@click.argument("repo", required=False, type=click.Path(path_type=Path))
@session_options
@click.option("--prompt", metavar="TEXT", help="Run the agent once, non-interactively, on TEXT.")
@click.option(
    "--json", "as_json", is_flag=True, help="With --prompt (or a command): print a JSON result at the end."
)
@click.pass_context
def run(
    ctx: click.Context,
    /,
    agent: str,
    repo: Path | None,
    prompt: str | None,
    as_json: bool,
    options: SessionOptions,
) -> int:
    """Run AGENT (claude, codex, copilot, shell, or your own) in an ephemeral session on REPO.

    Anything after -- is run instead of the agent's own command: `containai run shell -- make test`.
    """
    from containai.cli.render import print_json, prompt_result_json
    from containai.session import commands

    command: tuple[str, ...] = ctx.meta.get("containai.command", ())
    if command and prompt is not None:
        raise UsageError("--prompt and a command after -- do not go together", hint="use one of them")
    if as_json and prompt is None and not command:
        raise UsageError("--json goes with --prompt", hint='add --prompt "..."')
    app: AppContext = ctx.obj
    request = build_request(app, agent, repo, "ephemeral", options)
    ensure_proxy_image(app, request)
    interactive = prompt is None and sys.stdin.isatty() and sys.stdout.isatty()
    code, result = commands.run_ephemeral(
        app.runtime(),
        request,
        paths=app.paths,
        reporter=reporter(app),
        prompt=prompt,
        command=command,
        interactive=interactive,
        write=_write_output,
    )
    if as_json:
        print_json(prompt_result_json(result))
    return code  # the agent's own, or EXIT_WORK_KEPT when it succeeded but its work stayed behind


@click.command(context_settings=CONTEXT)
@click.argument("agent")
@click.argument("repo", required=False, type=click.Path(path_type=Path))
@session_options
@pass_app
def launch(app: AppContext, /, agent: str, repo: Path | None, options: SessionOptions) -> None:
    """Start AGENT in a persistent session (tmux inside the container) on REPO."""
    from containai.session import commands, vscode

    request = build_request(app, agent, repo, "persistent", options)
    ensure_proxy_image(app, request)
    plan = commands.launch_persistent(
        app.runtime(), request, paths=app.paths, reporter=reporter(app), command=()
    )
    click.echo(plan.name)
    click.echo(
        f"{agent} is running in {plan.name}. Attach with `connect-agent -n {plan.name}` (Ctrl-B D detaches), "
        f'or VS Code\'s "Attach to Running Container"; `remove-agent {plan.name}` brings the work home.',
        err=True,
    )
    home = vscode.user_home(os.environ)
    click.echo(vscode.render_attach_note(vscode.missing_user_settings(home)), err=True)


@click.command(context_settings=CONTEXT)
@click.option("-n", "--name", metavar="NAME", help="Session to attach to (optional with one running).")
@pass_app
def connect(app: AppContext, name: str | None) -> int:
    """Attach to a persistent session; Ctrl-B D detaches and the agent keeps working.

    A session that stopped (the engine restarted) or whose proxy or secret broker died is brought
    back first: its sidecars and container start again, and the agent starts again in tmux on the
    workspace as it left it.
    """
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("connect-agent needs a terminal", hint="run it from a terminal")
    from containai.agents.definition import get_agent
    from containai.session import commands

    runtime = app.runtime()
    settings = app.settings()
    chosen = commands.pick_session(runtime, name, settings.labels.value, state_root=app.paths.sessions_dir)
    # A session stopped by an engine restart, or with a sidecar that died, comes back first.
    commands.resume(
        runtime,
        chosen,
        state_root=app.paths.sessions_dir,
        reporter=reporter(app),
        agent_command=lambda agent: get_agent(agent, settings.paths.value.agents_dir).command,
        credential=lambda agent: stored_model_key(app, get_agent(agent, settings.paths.value.agents_dir)),
    )
    return commands.connect(runtime, chosen, state_root=app.paths.sessions_dir)


@click.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@label_option(SCOPE_HELP)
@pass_app
def list_(app: AppContext, as_json: bool, labels: tuple[str, ...]) -> None:
    """List sessions: name, agent, repo, branch, status and age."""
    from containai.cli.render import print_json, render_sessions, sessions_json
    from containai.session import commands, manager

    scope = app.settings(labels=labels).labels.value
    rows = manager.list_sessions(app.runtime(), scope, state_root=app.paths.sessions_dir)
    now = commands.now_utc()
    if as_json:
        print_json(sessions_json(rows, now))
        return
    if not rows:
        click.echo("no sessions", err=True)
        return
    render_sessions(app.out, rows, now)


@click.command(context_settings=CONTEXT)
@click.argument("name", required=False)
@click.option(
    "--all", "remove_all", is_flag=True, help="Remove every session (with --label: every one with it)."
)
@click.option("--no-push", is_flag=True, help="Discard the session's work instead of bringing it back.")
@click.option("-y", "--yes", is_flag=True, help="With --no-push: discard without asking.")
@click.option(
    "--keep-branch", is_flag=True, help="Keep the session's branch on the host even if it is empty."
)
@label_option(SCOPE_HELP)
@pass_app
def remove(
    app: AppContext,
    name: str | None,
    remove_all: bool,
    no_push: bool,
    yes: bool,
    keep_branch: bool,
    labels: tuple[str, ...],
) -> int:
    """Bring a session's work back to the host, then remove it and everything it created.

    With --no-push, work not yet brought home (commits, changed files) is listed and you are asked
    first; without a terminal, --yes is needed. Exits 75 when a session is kept because its work
    could not be brought home.
    """
    if remove_all == bool(name):
        raise UsageError("name one session, or pass --all", hint="see `list-agents`")
    from containai.session import manager
    from containai.session.commands import report_finish

    runtime = app.runtime()
    settings = app.settings(labels=labels)
    scope = settings.labels.value
    names = [row.name for row in manager.list_sessions(runtime, scope)] if remove_all else [name or ""]
    status = 0
    for each in names:
        if no_push and not yes and not _discard_confirmed(app, runtime, each):
            status = EXIT_WORK_KEPT
            continue
        result = manager.finish(
            runtime,
            each,
            push=not no_push,
            keep_branch=keep_branch,
            state_root=app.paths.sessions_dir,
            policy=settings.gate_policy(),
            bounds=settings.bounds,
        )
        report_finish(result, reporter(app), prefix=f"{each}: ")
        if result.kept:
            status = EXIT_WORK_KEPT
    return status


def _discard_confirmed(app: AppContext, runtime: ContainerRuntime, name: str) -> bool:
    """Whether ``name``'s unexported work may go: none there, or the user said yes at the terminal."""
    from containai.session import manager
    from containai.workspace.part import unexported_work

    steps = manager.local(runtime, app.paths.sessions_dir)
    work = unexported_work(steps.ports, steps.record(name), app.settings().bounds)
    if not work:
        return True
    shown = [f"  commit {c}" for c in work.commits] + [f"  changed {f}" for f in work.changed]
    more = "" if len(shown) <= 20 else f"\n  … and {len(shown) - 20} more"
    click.echo(f"{name} has work that --no-push would discard:\n" + "\n".join(shown[:20]) + more, err=True)
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise UsageError(
            f"not discarding the work in {name}: {len(work.commits)} commit(s), {len(work.changed)} changed file(s)",
            hint=f"bring it home with `remove-agent {name}`, or pass --yes to discard it",
        )
    if click.confirm(f"Discard it and remove {name}?", default=False, err=True):
        return True
    click.echo(f"{name} is kept", err=True)
    return False


SESSION_COMMANDS: dict[str, click.Command] = {
    "run": run,
    "launch": launch,
    "connect": connect,
    "list": list_,
    "remove": remove,
}
