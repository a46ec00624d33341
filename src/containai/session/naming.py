"""Names and labels for everything a session creates.

Containers are named ``{agent}-{repo}-{branch}``, sanitized to the engine's rules. Labels live in the
reserved ``ai.containai.`` namespace; every resource carries the session's id, so `containai gc` can
find what a dead session left behind, and a schema version, so a later release can read what an older
one created.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from containai.errors import UsageError
from containai.images.catalog import LABEL_PREFIX, SCHEMA_VERSION

MAX_NAME = 63  # a DNS label: the container name is also its host name on session networks

SESSION = f"{LABEL_PREFIX}.session"
ROLE = f"{LABEL_PREFIX}.role"
AGENT = f"{LABEL_PREFIX}.agent"
REPO = f"{LABEL_PREFIX}.repo"
BRANCH = f"{LABEL_PREFIX}.branch"
BASE = f"{LABEL_PREFIX}.base"
# "true" only when ContainAI created the session branch: it deletes or moves no ref it did not create.
BRANCH_CREATED = f"{LABEL_PREFIX}.branch-created"
CHANNEL = f"{LABEL_PREFIX}.channel"
MODE = f"{LABEL_PREFIX}.mode"
NETWORK = f"{LABEL_PREFIX}.network-proxy"
WORKSPACE = f"{LABEL_PREFIX}.workspace"
PUSH = f"{LABEL_PREFIX}.push"
LAUNCHER = f"{LABEL_PREFIX}.launcher"  # "<boot id>:<pid>" of the process that launched an ephemeral session
CREATED = f"{LABEL_PREFIX}.created"
SCHEMA = f"{LABEL_PREFIX}.schema"


_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,126}[a-z0-9])?$")


def parse_scope(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` labels of the user's: never in ContainAI's own ``ai.containai.`` namespace."""
    scope: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_KEY.match(key) or "\n" in value or len(value) > 256:
            raise UsageError(
                f"{item!r} is not a label", hint="use KEY=VALUE, e.g. team=web (lower-case key, no spaces)"
            )
        if key.startswith(f"{LABEL_PREFIX}."):
            raise UsageError(
                f"label {key!r} is in ContainAI's own namespace", hint=f"use a key outside {LABEL_PREFIX}."
            )
        scope[key] = value
    return scope


def sanitize(text: str) -> str:
    """Lower case, only ``[a-z0-9_.-]``, runs of anything else folded to one dash."""
    cleaned = re.sub(r"[^a-z0-9_.-]+", "-", text.lower())
    cleaned = re.sub(r"-{2,}", "-", cleaned)
    return cleaned.strip("-._")


def new_session_id() -> str:
    return secrets.token_hex(6)


def container_name(agent: str, repo: str, branch: str, taken: Callable[[str], bool]) -> str:
    """``{agent}-{repo}-{branch}``, bounded and unique: a clash gets a short random suffix."""
    base = sanitize(f"{agent}-{repo}-{branch}") or sanitize(agent) or "session"
    if not base[0].isalnum():
        base = f"c{base}"
    candidate = base[:MAX_NAME].rstrip("-._")
    for _ in range(20):
        if not taken(candidate):
            return candidate
        suffix = secrets.token_hex(3)
        candidate = f"{base[: MAX_NAME - len(suffix) - 1].rstrip('-._')}-{suffix}"
    raise RuntimeError("could not find a free container name")  # 20 random clashes: not a real case


@dataclass(frozen=True)
class SessionLabels:
    session: str
    agent: str
    repo: str
    branch: str
    base: str
    channel: str
    mode: str
    network_proxy: str
    workspace: str
    push: bool
    launcher: str
    created: str
    branch_created: bool = False
    # The user's own labels (--label, CONTAINAI_LABELS), on everything the session creates; they also
    # scope list-agents, remove-agent --all and gc.
    scope: Mapping[str, str] = field(default_factory=dict)

    def common(self) -> dict[str, str]:
        """The labels every resource of the session carries (containers, volumes, networks)."""
        return {**self.scope, SESSION: self.session, SCHEMA: SCHEMA_VERSION, AGENT: self.agent}

    def for_role(self, role: str) -> dict[str, str]:
        return {
            **self.common(),
            ROLE: role,
            REPO: self.repo,
            BRANCH: self.branch,
            BASE: self.base,
            BRANCH_CREATED: "true" if self.branch_created else "false",
            CHANNEL: self.channel,
            MODE: self.mode,
            NETWORK: self.network_proxy,
            WORKSPACE: self.workspace,
            PUSH: "true" if self.push else "false",
            LAUNCHER: self.launcher,
            CREATED: self.created,
        }

    @classmethod
    def parse(cls, labels: Mapping[str, str]) -> SessionLabels:
        return cls(
            session=labels.get(SESSION, ""),
            agent=labels.get(AGENT, ""),
            repo=labels.get(REPO, ""),
            branch=labels.get(BRANCH, ""),
            base=labels.get(BASE, ""),
            channel=labels.get(CHANNEL, ""),
            mode=labels.get(MODE, ""),
            network_proxy=labels.get(NETWORK, ""),
            workspace=labels.get(WORKSPACE, ""),
            push=labels.get(PUSH, "true") == "true",
            launcher=labels.get(LAUNCHER, ""),
            created=labels.get(CREATED, ""),
            # Absent on sessions from before the label: treated as the user's branch, never deleted.
            branch_created=labels.get(BRANCH_CREATED) == "true",
        )
