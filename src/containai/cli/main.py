"""The `containai` umbrella command: parse flags, call the core, render. No logic lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from containai import __version__
from containai.cli.app import AppContext, run_cli
from containai.cli.launchers import ConsoleReporter, run_agent, session_options
from containai.cli.render import ConsoleBuildReporter, print_json, render_doctor
from containai.config import record_ca, resolve_ca_cert
from containai.doctor import run_doctor
from containai.errors import UsageError
from containai.images.build import FROM_LABEL, plan_build, resolve_base_image, run_build
from containai.images.catalog import CHANNELS, LABEL_PREFIX, PARTS, SCHEMA_VERSION, image_tag, parse_parts
from containai.session import manager
from containai.workspace.gate import GatePolicy

pass_app = click.make_pass_decorator(AppContext)

CHANNEL_OPTION = click.option(
    "--channel",
    type=click.Choice(CHANNELS),
    default="dev",
    show_default=True,
    help="Image channel: dev (local builds), prod (release), nightly.",
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
    app.runtime_flag = runtime
    app.debug = app.debug or debug


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@CHANNEL_OPTION
@pass_app
def doctor(app: AppContext, as_json: bool, channel: str) -> int:
    """Check the engine, git, images and disk; print the fix for anything that fails.

    Exits 1 when something blocks launching.
    """
    report = run_doctor(app.runtime(), environ=app.environ, paths=app.paths, channel=channel)
    if as_json:
        data = report.to_json()
        data["log_file"] = str(app.paths.log_file)
        print_json(app.out, data)
    else:
        render_doctor(report, app.out)
        app.out.print(f"log: {app.paths.log_file}", highlight=False)
    return 0 if report.ok else 1


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
def images_build(app: AppContext, parts_text: str, channel: str, ca_cert: Path | None, no_pull: bool) -> None:
    """Build images (unchanged layers come from the cache, so a rebuild takes seconds)."""
    parts = parse_parts(parts_text)
    ca = resolve_ca_cert(ca_cert, app.environ, app.paths)
    runtime = app.runtime()
    info = runtime.info()
    meta = {f"{LABEL_PREFIX}.schema": SCHEMA_VERSION, f"{LABEL_PREFIX}.part": "debian"}
    with ConsoleBuildReporter(app.err) as reporter:
        if ca.value is not None:
            reporter.note(f"trusting the extra CA from {ca.source}")
        base_image = resolve_base_image(runtime, allow_pull=not no_pull, reporter=reporter, labels=meta)
        steps = plan_build(
            parts,
            channel=channel,
            arch=info.arch,
            base_image=base_image,
            ca_bundle=ca.value,
            npm_registry=app.environ.get("CONTAINAI_NPM_REGISTRY", "https://registry.npmjs.org"),
        )
        built = run_build(runtime, steps, reporter)
    record_ca(ca.value, app.paths)
    for step, image in built:
        click.echo(f"{step.tag}\t{image.id}")  # tab-separated for scripts (rich would expand the tab)


@images.command("list")
@CHANNEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def images_list(app: AppContext, channel: str, as_json: bool) -> None:
    """List ContainAI's images for a channel."""
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
        print_json(app.out, {"schema": 1, "images": rows})
        return
    for row in rows:
        state = f"{str(row['id'])[7:19]}  {row['created']}" if row["present"] else "missing"
        app.out.print(f"{row['tag']:<28} {state}", highlight=False)


class _CommandAfterDashes(click.Command):
    """Keeps what follows ``--`` as the command to run, apart from REPO (click would merge them)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["containai.command"] = tuple(args[cut + 1 :])
            args = args[:cut]
        return super().parse_args(ctx, args)


@cli.command(cls=_CommandAfterDashes)
@click.argument("agent")
@click.argument("repo", required=False, type=click.Path(path_type=Path))
@session_options
@click.option("--prompt", metavar="TEXT", help="Run the agent once, non-interactively, on TEXT.")
@click.option(
    "--json", "as_json", is_flag=True, help="With --prompt (or a command): print a JSON result at the end."
)
@click.pass_context
def run(
    ctx: click.Context, /, agent: str, repo: Path | None, prompt: str | None, as_json: bool, **opts: Any
) -> int:
    """Run AGENT (claude, codex, copilot, shell, or your own) in an ephemeral session on REPO.

    Anything after -- is run instead of the agent's own command: `containai run shell -- make test`.
    """
    command: tuple[str, ...] = ctx.meta.get("containai.command", ())
    if command and prompt is not None:
        raise UsageError("--prompt and a command after -- do not go together", hint="use one of them")
    app: AppContext = ctx.obj
    return run_agent(app, agent, repo, prompt, as_json, command, opts)


@cli.command()
@pass_app
def gc(app: AppContext) -> None:
    """Remove what dead sessions left behind (containers, volumes, networks), bringing their work home first."""
    removed = manager.gc(
        app.runtime(),
        state_root=app.paths.sessions_dir,
        reporter=ConsoleReporter(app),
        policy=GatePolicy.from_env(app.environ),
    )
    app.err.print(f"removed {len(removed)} dead session(s)", highlight=False)
    for session in removed:
        app.out.print(session, highlight=False)


def main() -> None:
    sys.exit(run_cli(cli, prog_name="containai"))
