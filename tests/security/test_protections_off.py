"""Each protection, switched off alone, lets its cases break: the suite's probes can see a failure.

The harness (never a user: ContainAI has no such switch) builds the agent's container from the very
spec sessions get (``session.plan.hardened_spec``) in a test-made container, once as planned and once
per switch below with that one setting changed, and runs the same probes in each as the agent: the
cases of a switch hold in the planned container and break in the weakened one.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from containai.gateway.sidecar import PLACEHOLDER
from containai.runtime.base import ContainerSpec, Mount
from containai.selftest.cases import parse_probe_output
from containai.selftest.runner import probe_script
from containai.session.plan import Resources, hardened_spec
from tests.engine.conftest import CHANNEL, LABELS, SOCKETS, Engine

from .cases import BY_ID, Agent
from .lab import HostCanary, agent_exec, leftovers, parse_agent_results, render_agent_probes

pytestmark = [pytest.mark.engine]

UID = 1000
Weaken = Callable[[ContainerSpec, Engine], ContainerSpec]

# switch -> (how it weakens the planned spec, the cases that must then break)
SWITCHES: dict[str, tuple[Weaken, tuple[str, ...]]] = {
    "user": (lambda s, e: replace(s, user="0:0"), ("non-root",)),
    "cap_drop": (lambda s, e: replace(s, cap_drop=()), ("no-capabilities",)),
    "no-new-privileges": (lambda s, e: replace(s, security_opt=()), ("no-new-privileges",)),
    "seccomp": (
        lambda s, e: replace(s, seccomp=None, security_opt=(*s.security_opt, "seccomp=unconfined")),
        ("seccomp", "user-namespace", "keyctl"),
    ),
    "read_only": (lambda s, e: replace(s, read_only=False), ("read-only-root",)),
    "tmpfs-noexec": (
        lambda s, e: replace(s, tmpfs={**s.tmpfs, "/tmp": "rw,exec,nosuid,nodev,size=64m"}),
        ("tmp-noexec",),
    ),
    "engine-socket": (
        lambda s, e: replace(
            s, mounts=(*s.mounts, Mount("/run/docker.sock", str(SOCKETS[e.kind]), "bind", True))
        ),
        ("no-engine-socket",),
    ),
    "network": (lambda s, e: replace(s, network_mode="bridge"), ("loopback-only", "host-gateway")),
    "env-secret": (
        lambda s, e: replace(
            s, environment={**s.environment, "ANTHROPIC_API_KEY": "sk-ant-not-a-placeholder"}
        ),
        ("no-secrets-in-env",),
    ),
    "core-ulimit": (
        lambda s, e: replace(s, ulimits=(*tuple(u for u in s.ulimits if u[0] != "core"), ("core", -1, -1))),
        ("no-core-dumps",),
    ),
    "pids": (lambda s, e: replace(s, pids_limit=-1), ("pids-limit",)),
    "memory": (lambda s, e: replace(s, memory_bytes=0), ("memory-limit",)),
}
PAIRS = [(switch, case) for switch, (_, cases) in SWITCHES.items() for case in cases]
PROBED = sorted({case for _, case in PAIRS})


def planned_spec(name: str, engine: Engine) -> ContainerSpec:
    """The agent's container as a session plans it (no repository, no sidecars), kept alive by sleep."""
    return replace(
        hardened_spec(
            image=f"containai-base:{CHANNEL}",
            name=name,
            command=["sleep 600"],
            labels=LABELS,
            uid=UID,
            gid=UID,
            mounts=[],
            resources=Resources(memory_bytes=2**30, nano_cpus=10**9),
            environment={"HOME": "/home/agent"},
        ),
        entrypoint=("bash", "-c"),
        working_dir="/",
    )


def probe(engine: Engine, spec: ContainerSpec, values: dict[str, str]) -> dict[str, tuple[bool, str]]:
    """The cases in PROBED, run as the agent in a container made from ``spec``; removed afterwards."""
    runtime = engine.runtime()
    try:
        runtime.create_container(spec)
        try:
            runtime.start(spec.name)
            user = spec.user
            agent_cases = [BY_ID[c] for c in PROBED if isinstance(BY_ID[c].probe, Agent)]
            results = parse_agent_results(
                agent_exec(engine, spec.name, render_agent_probes(values, agent_cases), user)
            )
            selftest = agent_exec(
                engine,
                spec.name,
                probe_script(),
                user,
                {"SELFTEST_HOST": socket.gethostname(), "SELFTEST_PLACEHOLDER": PLACEHOLDER},
            )
            for result in parse_probe_output(selftest):
                results[result.case.id] = (result.held, result.detail)
            return results
        finally:
            runtime.remove_container(spec.name)
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def weakened(sec_engine: Engine) -> Iterator[dict[str, dict[str, tuple[bool, str]]]]:
    """The probes' verdicts in the planned container ("planned") and in each weakened one."""
    canary = HostCanary()
    try:
        gateways = sorted(
            {
                c["Gateway"]
                for n in sec_engine.client.networks.list()
                for c in (n.attrs.get("IPAM") or {}).get("Config") or []
                if c.get("Gateway") and ":" not in c["Gateway"]
            }
        )
        values = {"GATEWAYS": " ".join(gateways), "HOST_PORT": str(canary.port)}
        found = {}
        for switch in ("planned", *SWITCHES):
            spec = planned_spec(
                f"containai-sec-{switch.replace('_', '-')}-{uuid.uuid4().hex[:6]}", sec_engine
            )
            if switch != "planned":
                spec = SWITCHES[switch][0](spec, sec_engine)
            found[switch] = probe(sec_engine, spec, values)
        yield found
    finally:
        canary.close()
    assert leftovers(sec_engine.client) == []


@pytest.mark.parametrize("switch,case_id", PAIRS, ids=[f"{s}-off-{c}" for s, c in PAIRS])
def test_a_case_breaks_when_its_protection_is_off(
    weakened: dict[str, dict[str, tuple[bool, str]]], sec_engine: Engine, switch: str, case_id: str
) -> None:
    planned = weakened["planned"].get(case_id, (False, "not reported"))
    if (known := BY_ID[case_id].known_on(sec_engine.kind)) and not planned[0]:
        pytest.xfail(f"known gap on {sec_engine.kind}, so nothing to switch off: {known}")
    off = weakened[switch].get(case_id, (False, "not reported"))
    assert planned[0], f"{case_id} broke even as planned: {planned[1]}"
    assert not off[0], (
        f"{case_id} still held with {switch} off ({off[1]}): the probe cannot see this protection"
    )
    assert BY_ID[case_id].switch == switch, "cases.py must name the switch this test turns off"


def test_every_switch_a_case_names_is_shown_here() -> None:
    named = {(case.switch, case.id) for case in BY_ID.values() if case.switch}
    assert named == set(PAIRS), f"named in cases.py but not switched off here: {named ^ set(PAIRS)}"
