"""The flags a session command takes, gathered into one typed, frozen object.

Cheap to import: `--help` builds these options before any command runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar, cast

import click

from containai.config import DEFAULT_DISK_LIMIT, DEFAULT_MAX_CPUS, DEFAULT_MEMORY
from containai.images.catalog import CHANNELS

FC = TypeVar("FC", bound=Callable[..., Any])
NetworkProxy = Literal["squid", "restricted"]

SCOPE_HELP = "Only sessions with label KEY=VALUE (repeatable; also: CONTAINAI_LABELS)."


@dataclass(frozen=True)
class SessionOptions:
    """What the user asked of a session on the command line (None: not given; settings decide)."""

    branch: str | None = None
    use_current_branch: bool = False
    push: bool = True
    force: bool = False
    name: str | None = None
    network_proxy: NetworkProxy = "squid"
    cpu: str | None = None
    memory: str | None = None
    disk_limit: str | None = None
    allow_domains: tuple[str, ...] = ()
    channel: str | None = None
    labels: tuple[str, ...] = ()
    expose_ignored: tuple[str, ...] = ()


def label_option(help_text: str) -> Callable[[FC], FC]:
    return click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help=help_text)


_OPTIONS = [
    click.option("-b", "--branch", metavar="B", help="Work on branch B (default: <agent>/session-N)."),
    click.option(
        "--use-current-branch",
        is_flag=True,
        help="Work on the repo's current branch; the work lands on it when safe.",
    ),
    click.option("--no-push", is_flag=True, help="Do not bring the session's work back to the host."),
    click.option("-y", "--force", is_flag=True, help="Launch on a dirty repo; archive an existing --branch."),
    click.option("--name", metavar="N", help="Name the session container <agent>-N."),
    click.option(
        "--network-proxy",
        type=click.Choice(["squid", "restricted"]),
        default="squid",
        show_default=True,
        help="squid: egress only through the audited proxy; restricted: no network at all.",
    ),
    click.option("--cpu", metavar="N", help=f"CPUs for the session (default: up to {DEFAULT_MAX_CPUS})."),
    click.option("--memory", metavar="SIZE", help=f"Memory, swap included (default: {DEFAULT_MEMORY})."),
    click.option(
        "--disk-limit",
        metavar="SIZE",
        help=f"Host disk the session may fill: workspace, cache, logs (default: {DEFAULT_DISK_LIMIT}).",
    ),
    click.option(
        "--allow-domain",
        "allow_domains",
        multiple=True,
        metavar="DOMAIN",
        help="Also allow DOMAIN through the proxy (.example.com: with subdomains). Repeatable.",
    ),
    click.option(
        "--channel",
        type=click.Choice(CHANNELS),
        help="Image channel (default: from the launcher's name; `containai`: dev).",
    ),
    label_option("Add label KEY=VALUE to everything the session creates (also: CONTAINAI_LABELS)."),
    click.option(
        "--expose-ignored",
        "expose_ignored",
        multiple=True,
        metavar="PATTERN",
        help="Show the agent ignored files matching PATTERN (.env, config/*.local); hidden by default. Repeatable.",
    ),
]
_NAMES = {f.name for f in fields(SessionOptions)} - {"push"} | {"no_push"}


def session_options(func: FC) -> FC:
    """Add the session flags to a command; its callback gets them as ``options: SessionOptions``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in _NAMES}
        no_push = given.pop("no_push")
        given["allow_domains"] = tuple(given["allow_domains"])
        given["labels"] = tuple(given["labels"])
        given["expose_ignored"] = tuple(given["expose_ignored"])
        return func(*args, options=SessionOptions(push=not no_push, **given), **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return cast(FC, decorated)
