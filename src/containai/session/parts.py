"""A session is a set of parts: the workspace, the egress proxy, the model gateway, MCP, the broker.

Each part plans what it adds to the session (containers, mounts, environment, files in the agent's
HOME) and has one step at each point of the session's life:

    plan ──> provision (before the agent's container) ──> start (the container runs) ──> ... agent ...
         ──> finish (bring the work and the records home) ──> teardown (undo what provision did)

A persistent session whose containers stopped (the engine restarted) or whose sidecar died comes back
through two more steps, which work from the labels as finish does and create nothing:

    restore (start again what provision made) ──> the agent's container ──> resume (redo what start
    did that a restart loses: relays, the stub; never the one-time set-up of the workspace)

The manager (``session.manager``) runs the parts in order, undoes them in one place when a step fails,
and never names a particular part. ``finish`` and ``teardown`` work from the session's labels alone,
so that another process (``remove-agent``, ``gc``) can end a session it did not start.

Adding a sidecar means adding a part to ``default_parts``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from containai.config import Bounds
from containai.runtime.base import ContainerInfo, Mount
from containai.session.naming import SessionLabels
from containai.workspace.gate import GatePolicy

if TYPE_CHECKING:
    from containai.broker.session import BrokerPaths
    from containai.mcp.config import McpServer
    from containai.secrets.value import Secret
    from containai.session.manager import SessionRequest
    from containai.session.plan import SessionPlan, WorkspaceChoice
    from containai.session.ports import Ports
    from containai.session.repo import BranchChoice, RepoInfo

T = TypeVar("T")


@dataclass(frozen=True)
class PlanContext:
    """What every part plans from; ``earlier`` holds the plans of the parts before it, by role."""

    request: SessionRequest
    session_id: str
    name: str  # the agent container's name; sidecars are named after it
    labels: SessionLabels
    repo: RepoInfo | None
    branch: BranchChoice | None
    workspace: WorkspaceChoice
    state_dir: Path
    mcp_servers: tuple[McpServer, ...]
    broker: BrokerPaths
    earlier: Mapping[str, PartPlan[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PartPlan(Generic[T]):
    """What one part adds to the agent's container, and its own plan (``detail``) for its steps.

    ``home_files`` are merged in part order into the agent's HOME; a later part may replace an earlier
    part's file (the MCP part merges its servers into the gateway part's Codex config).
    """

    role: str
    detail: T
    mounts: tuple[Mount, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    home_files: Mapping[str, str] = field(default_factory=dict)
    needs_broker: bool = False
    warnings: tuple[str, ...] = ()  # told to the user once the whole session is planned


@dataclass(frozen=True)
class SessionRecord:
    """A session as its labels describe it: from its agent container, or from a plan being undone
    (``container`` is then None, or not yet running)."""

    name: str
    labels: SessionLabels
    state_dir: Path
    container: ContainerInfo | None = None


@dataclass(frozen=True)
class FinishOptions:
    push: bool = True
    keep_branch: bool = False
    policy: GatePolicy = field(default_factory=GatePolicy)
    bounds: Bounds = field(
        default_factory=Bounds
    )  # how much the host takes from the session, how long it waits


@dataclass(frozen=True)
class PartResult:
    """What a part's finish step reports. ``keep``: the session must be kept (its work is not home)."""

    role: str
    message: str | None = None
    warnings: tuple[str, ...] = ()
    keep: bool = False
    detail: Any = None


@dataclass(frozen=True)
class ResumeContext:
    """What ``restore`` and ``resume`` know: the session (from its labels), and whether its agent's
    container was started again (a restart loses its tmpfs and every process but its entrypoint)."""

    record: SessionRecord
    restarted: bool
    restored: frozenset[str] = frozenset()  # the roles whose restore started something again
    # The host's model key for the session's agent, looked up only if its gateway must start again.
    credential: Callable[[], Secret | None] = lambda: None


class SessionPart(Protocol[T]):
    role: str
    holds_work: bool  # an unexpected failure of its finish keeps the session (the work is not home)

    def plan(self, ctx: PlanContext) -> PartPlan[T] | None:
        """Pure: None when the part has no place in this session."""
        ...

    def provision(self, ports: Ports, session: SessionPlan, planned: PartPlan[T]) -> None:
        """Before the agent's container exists: create sidecars, volumes, host files."""
        ...

    def start(self, ports: Ports, session: SessionPlan, planned: PartPlan[T]) -> None:
        """The agent's container runs: what must happen inside it before the agent starts."""
        ...

    def restore(self, ports: Ports, ctx: ResumeContext) -> bool:
        """Before the agent's container runs again: start what provision made and is not running (a
        sidecar stopped by an engine restart, or killed). Creates nothing; False when all ran."""
        ...

    def resume(self, ports: Ports, ctx: ResumeContext) -> None:
        """The agent's container runs (again): redo what ``start`` did that is gone, and only that."""
        ...

    def finish(self, ports: Ports, record: SessionRecord, options: FinishOptions) -> PartResult | None:
        """Before teardown, with the containers still there: bring work and records home."""
        ...

    def teardown(self, ports: Ports, record: SessionRecord, options: FinishOptions) -> None:
        """Undo what provision did beyond the labelled containers, volumes and networks (removed by the
        manager). Runs on rollback too, with the record of a session that may be half made."""
        ...


class BasePart(Generic[T]):
    """Parts override only the steps they have."""

    role = "part"
    holds_work = False

    def provision(self, ports: Ports, session: SessionPlan, planned: PartPlan[T]) -> None:
        return None

    def start(self, ports: Ports, session: SessionPlan, planned: PartPlan[T]) -> None:
        return None

    def restore(self, ports: Ports, ctx: ResumeContext) -> bool:
        return False

    def resume(self, ports: Ports, ctx: ResumeContext) -> None:
        return None

    def finish(self, ports: Ports, record: SessionRecord, options: FinishOptions) -> PartResult | None:
        return None

    def teardown(self, ports: Ports, record: SessionRecord, options: FinishOptions) -> None:
        return None


def default_parts() -> tuple[SessionPart[Any], ...]:
    """The parts of every session, in order: provision and start run in this order, teardown reversed."""
    from containai.egress.part import EgressPart
    from containai.gateway.part import GatewayPart
    from containai.session.disk import DiskPart
    from containai.session.mcp import BrokerPart, McpPart
    from containai.workspace.part import WorkspacePart

    return (DiskPart(), WorkspacePart(), EgressPart(), GatewayPart(), McpPart(), BrokerPart())
