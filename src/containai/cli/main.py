"""The `containai` command: one click group; parse flags, call the core, render. No logic lives here.

The launchers (run-claude, launch-agent, ...) are aliases of its subcommands (see programs.toml and
launchers.py). Importing this module is cheap: each command imports what it needs when it runs, so
`containai --version` and `--help` never load the engine client, rich or cryptography.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from containai import __version__, trust
from containai.cli.app import AppContext, run_cli
from containai.cli.options import SCOPE_HELP, SessionOptions, label_option
from containai.cli.sessions import SESSION_COMMANDS, reporter
from containai.errors import EXIT_AUDIT_BROKEN, EXIT_NOT_READY, EXIT_OK, UsageError
from containai.images.catalog import CHANNELS, PARTS

if TYPE_CHECKING:
    from containai.mcp.config import McpResolution

pass_app = click.make_pass_decorator(AppContext)

CHANNEL_OPTION = click.option(
    "--channel",
    type=click.Choice(CHANNELS),
    help="Image channel: dev (local builds), prod (release), nightly (default: dev, or the settings').",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="containai")
@click.option(
    "--runtime",
    metavar="ENGINE",
    help="docker, podman, or an Engine API URL (default: CONTAINAI_RUNTIME, DOCKER_HOST, then auto-detect).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (the log file always has them).")
@pass_app
def cli(app: AppContext, runtime: str | None, debug: bool) -> None:
    """Run AI coding agents in hardened containers."""
    app.flags = replace(app.flags, runtime=runtime, debug=app.flags.debug or debug)
    app.debug = app.debug or debug


for _name, _command in SESSION_COMMANDS.items():
    cli.add_command(_command, _name)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--settings", "show_settings", is_flag=True, help="Also show every setting and where it came from."
)
@CHANNEL_OPTION
@pass_app
def doctor(app: AppContext, as_json: bool, show_settings: bool, channel: str | None) -> int:
    """Check the engine, git, images and disk; print the fix for anything that fails.

    Exits 1 when something blocks launching.
    """
    from containai.cli.render import print_json, render_doctor, render_settings
    from containai.cli.sessions import _repo_root
    from containai.doctor import run_doctor

    settings = app.settings(repo=_repo_root(None), channel=channel)
    report = run_doctor(app.runtime(), environ=app.environ, paths=app.paths, channel=settings.channel.value)
    if as_json:
        data = report.to_json()
        data["log_file"] = str(app.paths.log_file)
        if show_settings:
            data["settings"] = settings.to_json()
        print_json(data)
    else:
        render_doctor(report, app.out)
        if show_settings:
            app.out.print("settings:", highlight=False)
            render_settings(settings, app.out)
        app.out.print(f"log: {app.paths.log_file}", highlight=False)
    return 0 if report.ok else EXIT_NOT_READY


@cli.command()
@click.argument("agent", default="shell")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@CHANNEL_OPTION
@label_option("Add label KEY=VALUE to everything the session creates (also: CONTAINAI_LABELS).")
@pass_app
def selftest(app: AppContext, agent: str, as_json: bool, channel: str | None, labels: tuple[str, ...]) -> int:
    """Attack a real session from inside, as a hostile agent would, and say what held.

    The session is started as `run` starts one, with your engine, settings, allowlist and MCP
    servers, on AGENT's image (default: shell), with no repository. Nothing is sent off this
    machine, and the session is removed at the end. Exits 1 when a case broke.
    """
    from containai.cli.render import print_json, render_selftest
    from containai.cli.sessions import build_request
    from containai.selftest.runner import SELFTEST_LABEL, run_selftest
    from containai.session import manager
    from containai.session.commands import usable_mcp_servers

    options = SessionOptions(push=False, name="selftest", channel=channel, labels=labels)
    request = build_request(app, agent, None, "ephemeral", options, repository=False)
    request = replace(request, scope={**request.scope, SELFTEST_LABEL[0]: SELFTEST_LABEL[1]})
    steps = manager.local(app.runtime(), app.paths.sessions_dir, reporter(app))
    report = run_selftest(
        steps, request, mcp_servers=usable_mcp_servers(app.paths, None, request, steps.ports.reporter)
    )
    if as_json:
        print_json(report.to_json())
    else:
        render_selftest(report, app.out)
    return 0 if report.ok else EXIT_NOT_READY


@cli.group()
def images() -> None:
    """Build and list ContainAI's images."""


@images.command("build")
@click.option(
    "--agents",
    "parts_text",
    default="all",
    show_default=True,
    metavar="LIST",
    help=f"Comma-separated parts to build: {','.join(PARTS)}, or all. Agents imply base.",
)
@CHANNEL_OPTION
@click.option(
    "--ca-cert",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Extra CA bundle to trust during builds and in sessions (env: CONTAINAI_EXTRA_CA_CERT). "
    "Remembered for later builds.",
)
@click.option(
    "--no-pull", is_flag=True, help="Do not try to pull debian:bookworm-slim; bootstrap it locally."
)
@pass_app
def images_build(
    app: AppContext, parts_text: str, channel: str | None, ca_cert: Path | None, no_pull: bool
) -> None:
    """Build images (unchanged layers come from the cache, so a rebuild takes seconds)."""
    from containai.cli.building import build_images
    from containai.images.catalog import parse_parts

    parts = parse_parts(parts_text)
    channel = app.settings(channel=channel).channel.value
    built = build_images(app, parts, channel=channel, ca_cert=ca_cert, no_pull=no_pull)
    for step, image in built:
        click.echo(f"{step.tag}\t{image.id}")  # tab-separated for scripts (rich would expand the tab)


@images.command("list")
@CHANNEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def images_list(app: AppContext, channel: str | None, as_json: bool) -> None:
    """List ContainAI's images for a channel."""
    from containai.cli.render import print_json
    from containai.images.build import FROM_LABEL
    from containai.images.catalog import image_tag

    channel = app.settings(channel=channel).channel.value
    runtime = app.runtime()
    rows = []
    for part in PARTS:
        tag = image_tag(part, channel)
        image = runtime.image(tag)
        rows.append(
            {
                "tag": tag,
                "present": image is not None,
                "id": image.id if image else None,
                "created": image.created if image else None,
                "from": image.labels.get(FROM_LABEL) if image else None,
            }
        )
    if as_json:
        print_json({"schema": 1, "images": rows})
        return
    for row in rows:
        state = f"{str(row['id'])[7:19]}  {row['created']}" if row["present"] else "missing"
        app.out.print(f"{row['tag']:<28} {state}", highlight=False)


@cli.command()
@click.argument("name")
@click.option("--egress", is_flag=True, help="The egress audit: every request, allowed or denied.")
@click.option(
    "--refused",
    is_flag=True,
    help="What the git gate refused in a kept session: the commit, why, where it is.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line, for scripts.")
@pass_app
def logs(app: AppContext, name: str, egress: bool, refused: bool, as_json: bool) -> None:
    """Show a session's logs (running or finished): with --egress, the proxy's audit; with --refused,
    what the git gate refused."""
    if egress == refused:
        raise UsageError(
            "say which log, --egress or --refused",
            hint=f"`containai logs {name} --egress` shows the egress audit, "
            f"`containai logs {name} --refused` what the git gate refused",
        )
    import dataclasses
    import json

    if refused:
        from containai.session import commands as session_commands
        from containai.workspace.part import render_refusal

        found = session_commands.refusal(app.runtime(), name, state_root=app.paths.sessions_dir)
        if as_json:
            click.echo(json.dumps(found))
        else:
            app.out.print(render_refusal(found), highlight=False, markup=False)
        return

    from rich.markup import escape

    from containai.config import Bounds
    from containai.egress import sidecar
    from containai.session import commands
    from containai.text import printable

    bound = app.settings().egress_log_max
    audit = commands.egress_audit(
        app.runtime(), name, state_root=app.paths.sessions_dir, max_bytes=bound.value
    )
    if note := audit.note():
        app.err.print(
            f"note: {note}; egress_log_max is {bound.value} bytes ({bound.source}): to keep more, "
            f"{Bounds.how_to_change('egress_log_max')}",
            markup=False,
            highlight=False,
        )
    records = sidecar.parse_audit(audit.text)
    if as_json:
        for record in records:
            click.echo(json.dumps(dataclasses.asdict(record)))
        return
    for record in records:
        colour = "green" if record.decision == "allow" else "red"
        # The time, method and host are what the agent sent: shown printable, and never as markup.
        time, method, host = (escape(printable(text)) for text in (record.time, record.method, record.host))
        app.out.print(
            f"{time}  [{colour}]{record.decision:5}[/]  {record.status:>3}  {record.client:7}  {method:7} "
            f"{host}:{record.port}  up {record.bytes_up} down {record.bytes_down}  ({record.rule})",
            highlight=False,
        )


@cli.group()
def audit() -> None:
    """The secret broker's audit: check that nothing was edited, removed or cut from it."""


@audit.command("verify")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_app
def audit_verify(app: AppContext, name: str, as_json: bool) -> int:
    """Verify session NAME's broker audit (running or finished): each line's MAC under the session's
    chain key, the order of its lines, its checkpoint and its close line. Exits 1 if it is broken."""
    import json

    from containai.broker.audit import verify
    from containai.session import commands

    found = commands.broker_audit(app.runtime(), name, state_root=app.paths.sessions_dir)
    verdict = verify(found.path, finished=found.finished)
    if as_json:
        click.echo(json.dumps({**verdict.as_json(), "path": str(found.path)}))
    else:
        app.out.print(f"{verdict.render()} ({found.path})", highlight=False, markup=False)
    return EXIT_OK if verdict.ok else EXIT_AUDIT_BROKEN


@cli.group()
def network() -> None:
    """Egress policy: what a repository asks to reach, and approving it."""


@network.command("approve")
@click.argument("repo", type=click.Path(path_type=Path, file_okay=False))
@click.argument("domains", nargs=-1)
@pass_app
def network_approve(app: AppContext, repo: Path, domains: tuple[str, ...]) -> None:
    """Allow sessions on REPO to reach DOMAINS it asks for (all it asks for, when none are named)."""
    root = repo.resolve()
    requested = trust.repo_requests(root)
    chosen = domains or requested
    if not chosen:
        raise UsageError(f"{root} asks for no domains", hint=f"its requests go in {root / trust.REPO_CONFIG}")
    unasked = [d for d in chosen if d not in requested]
    if unasked:
        reporter(app).warn(f"{root} did not ask for {', '.join(unasked)}; approving anyway")
    approved_now = trust.approve(app.paths.approvals_file, root, chosen)
    app.out.print(f"approved for {root}: {', '.join(approved_now)}", highlight=False)


@network.command("show")
@click.argument("repo", required=False, type=click.Path(path_type=Path, file_okay=False))
@pass_app
def network_show(app: AppContext, repo: Path | None) -> None:
    """What REPO asks to reach, and which of those you approved."""
    root = (repo or Path.cwd()).resolve()
    requested = trust.repo_requests(root)
    ok = set(trust.approved(app.paths.approvals_file, root))
    if not requested:
        app.out.print(f"{root} asks for no domains", highlight=False)
    for domain in requested:
        app.out.print(f"{domain}\t{'approved' if domain in ok else 'waiting for approval'}", highlight=False)


def _find_repo_root(repo: Path | None) -> Path | None:
    """The top level of REPO's git repository, or the working directory's (None if that is in none).

    Approvals are kept under that path, the one sessions look them up by.
    """
    from containai.hostgit import HostGit

    start = (repo or Path.cwd()).resolve()
    if repo is not None and not start.is_dir():
        raise UsageError(f"{repo} is not a directory", hint="pass the path of a git repository")
    top = HostGit(start).toplevel()
    if top is not None:
        return top
    if repo is None:
        return None
    raise UsageError(f"{start} is not inside a git repository", hint="pass a repository's path")


def _repo_root(repo: Path | None) -> Path:
    root = _find_repo_root(repo)
    if root is None:
        raise UsageError(
            f"{Path.cwd()} is not inside a git repository", hint="run it in a repository, or pass REPO"
        )
    return root


def _repo_and_names(words: tuple[str, ...]) -> tuple[Path | None, tuple[str, ...]]:
    from containai.mcp.config import SERVER_NAME

    # A server name has no '/' or '.', so a first word that could not be one is the repository.
    if words and not SERVER_NAME.match(words[0]):
        return Path(words[0]), words[1:]
    return None, words


@cli.group()
def mcp() -> None:
    """MCP servers: yours (config.toml) always run; a repository's run once you approve them.

    Declare them as [mcp_servers.NAME] tables with command/args/env or url/bearer_token/headers;
    ${NAME} in env, bearer_token and header values is a host secret (`containai secrets set NAME`).
    """


@mcp.command("ls")
@click.argument("repo", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def mcp_ls(app: AppContext, repo: Path | None, as_json: bool) -> None:
    """List the MCP servers a session on REPO would have, and which wait for approval.

    REPO defaults to the git repository of the working directory. Secrets are listed by name only.
    """
    from containai.cli.render import print_json
    from containai.mcp.config import resolve_mcp_servers
    from containai.secrets import store as secret_store

    root = _find_repo_root(repo)
    resolution = resolve_mcp_servers(app.paths, root)
    statuses = resolution.statuses()
    sources = secret_store.default_sources(app.paths, app.environ)
    missing = {
        name
        for server, _ in statuses
        for name in server.secret_names()
        if secret_store.resolve_secret(name, sources) is None
    }
    if as_json:
        rows = [
            {
                "name": server.name,
                "source": server.source,
                "kind": server.kind,
                "status": status,
                "secrets": list(server.secret_names()),
                "missing": [name for name in server.secret_names() if name in missing],
            }
            for server, status in statuses
        ]
        print_json({"schema": 1, "repo": str(root) if root else None, "servers": rows})
        return
    if not statuses:
        app.err.print(
            f"no MCP servers: declare them as [mcp_servers.NAME] in {app.paths.config_file}"
            + (f" or {root / trust.REPO_CONFIG}" if root else ""),
            markup=False,
        )
        return
    table = [["NAME", "SOURCE", "KIND", "STATUS", "SECRETS"]]
    table += [
        [
            server.name,
            server.source,
            server.kind,
            status,
            ", ".join(f"{n} (not stored)" if n in missing else n for n in server.secret_names()) or "-",
        ]
        for server, status in statuses
    ]
    widths = [max(len(row[column]) for row in table) for column in range(4)]
    for row in table:
        click.echo(
            "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4]])
        )
    _mention_waiting(app, resolution, root)
    if missing:
        app.err.print(
            f"not stored on this host: {', '.join(sorted(missing))}; servers that need them are not started "
            f"(store one with `containai secrets set {sorted(missing)[0]}`)",
            markup=False,
        )


def _mention_waiting(app: AppContext, resolution: McpResolution, root: Path | None) -> None:
    if resolution.pending and root is not None:
        app.err.print(
            f"{len(resolution.pending)} of {root}'s servers wait for approval: `containai mcp approve {root}`",
            markup=False,
        )
    for server in resolution.shadowed:
        app.err.print(
            f"{root}'s server {server.name} is ignored: yours of that name runs instead", markup=False
        )


@mcp.command("approve")
@click.argument("words", nargs=-1, metavar="[REPO] [NAME]...")
@click.option("--yes", "-y", is_flag=True, help="Approve without asking (needed when there is no terminal).")
@pass_app
def mcp_approve(app: AppContext, words: tuple[str, ...], yes: bool) -> int:
    """Let sessions on REPO run its MCP servers NAME (all that wait, when none are named).

    Each server's whole definition is shown first; approving pins exactly that definition, so a
    later change to it waits for approval again. REPO defaults to the git repository of the working
    directory; write it as a path (./name) when it could be read as a server name.
    """
    from containai.mcp.config import render_definition, resolve_mcp_servers

    repo, names = _repo_and_names(words)
    root = _repo_root(repo)
    resolution = resolve_mcp_servers(app.paths, root)
    waiting = {entry.server.name: entry for entry in resolution.pending}
    approved_already = {s.name for s in resolution.servers if s.source == "repo"}
    shadowed = {s.name for s in resolution.shadowed}
    if not (waiting or approved_already or shadowed):
        raise UsageError(
            f"{root} declares no MCP servers",
            hint=f"a repository's servers go in {root / trust.REPO_CONFIG} as [mcp_servers.NAME]",
        )
    unknown = [n for n in names if n not in waiting and n not in approved_already and n not in shadowed]
    if unknown:
        raise UsageError(
            f"{root} declares no MCP server {', '.join(unknown)}",
            hint=f"its servers are {', '.join(sorted({*waiting, *approved_already, *shadowed}))}; "
            "`containai mcp ls` shows them (write a repository as a path, e.g. ./name)",
        )
    if refused := [n for n in names if n in shadowed]:
        raise UsageError(
            f"{root}'s server {', '.join(refused)} never runs: you have a server of that name",
            hint="yours wins; rename one of them to have both",
        )
    for name in names:
        if name in approved_already:
            app.err.print(f"{name} is already approved for {root}", markup=False)
    chosen = [waiting[n] for n in (names or sorted(waiting)) if n in waiting]
    if not chosen:
        app.err.print(f"nothing of {root} waits for approval", markup=False)
        return 0
    for entry in chosen:
        why = "new" if entry.reason == "new" else "changed since you approved it"
        click.echo(f"{render_definition(entry.server)}\n  ({why})\n")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "no terminal to ask for confirmation on",
                hint=f"review the definitions above, then run `containai mcp approve {root} --yes`",
            )
        if not click.confirm(f"Let sessions on {root} run these servers?", default=False, err=True):
            app.err.print("nothing approved", markup=False)
            return 1
    trust.approve_mcp(app.paths.approvals_file, root, [entry.server for entry in chosen])
    app.out.print(f"approved for {root}: {', '.join(e.server.name for e in chosen)}", markup=False)
    return 0


@mcp.command("revoke")
@click.argument("words", nargs=-1, metavar="[REPO] [NAME]...")
@pass_app
def mcp_revoke(app: AppContext, words: tuple[str, ...]) -> None:
    """Withdraw the approval of REPO's MCP servers NAME (all of them, when none are named)."""
    repo, names = _repo_and_names(words)
    root = _repo_root(repo)
    pinned = trust.approved_mcp(app.paths.approvals_file, root)
    unknown = [n for n in names if n not in pinned]
    if unknown:
        raise UsageError(
            f"no approval of {', '.join(unknown)} for {root}",
            hint=f"approved: {', '.join(sorted(pinned))}" if pinned else "nothing is approved for it",
        )
    dropped = trust.revoke_mcp(app.paths.approvals_file, root, names)
    app.out.print(f"revoked for {root}: {', '.join(dropped) or 'nothing'}", markup=False)


@cli.command()
@label_option(SCOPE_HELP)
@pass_app
def gc(app: AppContext, labels: tuple[str, ...]) -> None:
    """Remove what dead sessions left behind (containers, volumes, networks), bringing their work home first."""
    from containai.session import manager

    settings = app.settings(labels=labels)
    removed = manager.gc(
        app.runtime(),
        state_root=app.paths.sessions_dir,
        reporter=reporter(app),
        policy=settings.gate_policy(),
        scope=settings.labels.value,
        bounds=settings.bounds,
    )
    app.err.print(f"removed {len(removed)} dead session(s)", highlight=False)
    for session in removed:
        app.out.print(session, highlight=False)


@cli.group()
def secrets() -> None:
    """Host secrets for sessions. Values are never taken from the command line.

    Looked up in order: the OS keyring (with the keyring extra), ContainAI's store (secrets.env in the
    config directory, mode 0600), mcp-secrets.env beside it (kept by hand), then the environment.
    """


# Extra arguments are taken in and refused by the command, so that click's own error does not repeat
# a value typed on the command line back onto the screen.
@secrets.command("set", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name")
@click.option(
    "--from-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the value from FILE (one trailing newline is dropped).",
)
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the value from standard input.")
@click.option(
    "--keyring", "use_keyring", is_flag=True, help="Store it in the OS keyring, not ContainAI's file."
)
@pass_app
def secrets_set(
    app: AppContext, name: str, from_file: Path | None, from_stdin: bool, use_keyring: bool
) -> None:
    """Store secret NAME; without --stdin or --from-file, prompt for it with hidden input."""
    from containai.secrets import store as secret_store

    secret_store.check_name(name)
    if click.get_current_context().args:
        raise UsageError(
            "secret values are never taken from the command line",
            hint=f"use `containai secrets set {name}` (it prompts), --stdin or --from-file; "
            "a value typed there is in your shell history, so rotate it",
        )
    if from_file is not None and from_stdin:
        raise UsageError("--from-file and --stdin do not go together", hint="use one of them")
    if from_file is not None:
        value = secret_store.secret_from_file(from_file)
    elif from_stdin:
        value = secret_store.secret_from_stream(sys.stdin)
    elif not sys.stdin.isatty():
        raise UsageError(
            "no terminal to prompt for the value on",
            hint=f"pipe it in: `containai secrets set {name} --stdin`, or use --from-file PATH",
        )
    else:
        entered = click.prompt(f"Value for {name}", hide_input=True, confirmation_prompt=True, err=True)
        value = secret_store.secret_from_input(str(entered).encode("utf-8"), "the prompt")
    target = secret_store.target_store(app.paths, keyring=use_keyring)
    others = secret_store.writable_stores(app.paths, app.environ)
    for label in secret_store.store_secret(name, value, target, others):
        app.err.print(f"removed the previous value of {name} from {label}", highlight=False)
    app.err.print(f"stored {name} in {target.label}", highlight=False)


@secrets.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def secrets_ls(app: AppContext, as_json: bool) -> None:
    """List secret names and where each comes from (never the values)."""
    from containai.cli.render import print_json
    from containai.secrets import store as secret_store

    listings = secret_store.list_secrets(secret_store.default_sources(app.paths, app.environ))
    if as_json:
        print_json({"schema": 1, "secrets": [listing.to_json() for listing in listings]})
        return
    if not listings:
        app.err.print("no secrets stored; add one with `containai secrets set NAME`", highlight=False)
    for listing in listings:
        hides = f"\t(hides {', '.join(listing.shadowed)})" if listing.shadowed else ""
        click.echo(f"{listing.name}\t{listing.source}{hides}")  # tab-separated for scripts


@secrets.command("rm")
@click.argument("name")
@pass_app
def secrets_rm(app: AppContext, name: str) -> None:
    """Remove secret NAME from ContainAI's store and the OS keyring."""
    from containai.secrets import store as secret_store

    removed = secret_store.remove_secret(name, secret_store.writable_stores(app.paths, app.environ))
    remaining = secret_store.resolve_secret(name, secret_store.default_sources(app.paths, app.environ))
    if not removed:
        raise UsageError(
            f"ContainAI's stores hold no secret {name}",
            hint=f"it comes from {remaining[1]}; remove it there"
            if remaining
            else "`containai secrets ls` lists the names",
        )
    app.err.print(f"removed {name} from {', '.join(removed)}", highlight=False)
    if remaining:
        reporter(app).warn(f"{name} is still set in {remaining[1]}, and sessions will use that value")


def main() -> None:
    sys.exit(run_cli(cli, prog_name="containai"))
