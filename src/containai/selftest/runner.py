"""Run the selftest: a real session, started as `run` starts one, probed from inside, always removed.

The session is the user's own: their engine, settings, allowlist, MCP servers and agent image. It has
no repository (nothing of the user's is mounted in, and no work can come home), pushes nothing, and
carries the label ``containai.selftest=1``. Whatever happens (a broken case, an error, Ctrl-C,
SIGTERM) it is finished and torn down by the session manager, and then collected by a gc scoped to
its own session id, for anything an engine left behind (Podman sometimes keeps a volume).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from importlib import resources

from containai.errors import SessionError
from containai.gateway.sidecar import PLACEHOLDER
from containai.mcp.config import McpServer
from containai.runtime.base import ExecSpec
from containai.selftest.cases import CASES, Case, Report, parse_probe_output
from containai.session import naming
from containai.session.commands import Hangup, finish_on_signals
from containai.session.manager import SessionManager, SessionRequest, agent_exec
from containai.session.parts import FinishOptions, SessionRecord
from containai.session.plan import SessionPlan

log = logging.getLogger("containai.selftest")

SELFTEST_LABEL = ("containai.selftest", "1")  # a user label (outside ContainAI's namespace): findable
PROBE_SECONDS = 45.0  # the probes take a few seconds; past this, the container is not answering


def probe_script() -> bytes:
    return resources.files("containai.selftest").joinpath("probe.sh").read_bytes()


def probe_exec(plan: SessionPlan, *, host_name: str) -> ExecSpec:
    """probe.sh as the agent runs a command: its user, its environment; fed on stdin to `bash -s`."""
    spec = agent_exec(plan, ("bash", "-s"))
    environment = {
        **spec.environment,
        "SELFTEST_HOST": host_name,
        "SELFTEST_PLACEHOLDER": PLACEHOLDER,
        "SELFTEST_PROXY": plan.environment.get("HTTP_PROXY", "http://127.0.0.1:3128"),
    }
    return ExecSpec(
        spec.argv,
        user=spec.user,
        environment=environment,
        workdir=spec.workdir,
        stdin=probe_script(),
        timeout=PROBE_SECONDS,
    )


def run_selftest(
    manager: SessionManager,
    request: SessionRequest,
    *,
    mcp_servers: Sequence[McpServer] = (),
    host_name: str | None = None,
    cases: Sequence[Case] = CASES,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Start the session, run the probes in it as the agent, remove it all; the report."""
    started = clock()
    # SIGTERM and SIGHUP, like Ctrl-C, end the run through the clean-up below (plan and provision
    # undo themselves), never by killing the process with the session still there.
    try:
        with finish_on_signals():
            plan = manager.plan(request, repo=None, mcp_servers=mcp_servers)
            try:
                manager.provision(plan)  # rolls the session back itself when it fails
                output: list[bytes] = []
                code = manager.ports.runtime.exec(
                    plan.name,
                    probe_exec(plan, host_name=host_name or socket.gethostname()),
                    on_output=lambda stream, data: output.append(data) if stream == "stdout" else None,
                )
            finally:
                remove(manager, plan)
    except Hangup:
        raise SessionError(
            "the selftest was stopped before it finished", hint="run `containai selftest` again"
        ) from None
    text = b"".join(output).decode("utf-8", "replace")
    log.info("probe exited %s:\n%s", code, text)
    return Report(parse_probe_output(text, cases), seconds=clock() - started)


def remove(manager: SessionManager, plan: SessionPlan) -> None:
    """Everything of the session goes: finish (nothing to bring home), a teardown for anything finish
    left, then a gc of this session alone; what still remains is named, with how to remove it."""
    runtime, reporter = manager.ports.runtime, manager.ports.reporter
    try:
        if runtime.container(plan.name) is not None:
            manager.finish(plan.name, FinishOptions(push=False, keep_branch=False))
    finally:
        record = SessionRecord(plan.name, plan.labels, plan.state_dir, runtime.container(plan.name))
        try:
            manager.teardown(record, FinishOptions(push=False))
        except Exception as exc:  # gc below tries again; what it cannot remove is named
            log.warning("teardown of %s: %s", plan.name, exc, exc_info=True)
        manager.gc(scope={naming.SESSION: plan.session_id})
        selector = {naming.SESSION: plan.session_id}
        left = [c.name for c in runtime.containers(selector)] + [v.name for v in runtime.volumes(selector)]
        left += [n.name for n in runtime.networks(selector)]
        if left:
            reporter.warn(f"the selftest's session left {', '.join(left)}: `containai gc` removes them")
