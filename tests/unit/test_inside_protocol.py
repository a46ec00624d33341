"""One copy of each host-image contract: the host's code uses containai.inside.protocol, and the files
that cannot import it (Dockerfiles, the proxy's shell script, the broker's exception classes) agree."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from containai import errors
from containai.agents.definition import GatewayDef, get_agent
from containai.broker import tokens
from containai.broker.server import SESSION_STUB_OPS, BadRequest, _failure
from containai.egress import sidecar as egress_sidecar
from containai.gateway import sidecar as gateway_sidecar
from containai.images.catalog import image_tag
from containai.inside import protocol, stub
from containai.mcp import config as mcp_config
from containai.mcp import render as mcp_render
from containai.session import mcp as session_mcp
from containai.session import plan as session_plan


def context(part: str, name: str) -> str:
    return resources.files("containai.images").joinpath("context", part, name).read_text(encoding="utf-8")


def refusal_classes(root: type[errors.CapabilityRefused]) -> list[type[errors.CapabilityRefused]]:
    found = [root]
    for child in root.__subclasses__():
        found += refusal_classes(child)
    return found


def test_every_capability_refusal_is_a_protocol_word() -> None:
    reasons = {cls.reason for cls in refusal_classes(errors.CapabilityRefused)}
    assert reasons <= protocol.REFUSALS
    assert {errors.TokenExpired.reason, errors.TokenNotLive.reason} == protocol.RENEWABLE


@pytest.mark.parametrize(
    "exc",
    [
        errors.TokenExpired("old"),
        errors.PeerRefused(uid=1000, pid=1, op="redeem"),
        errors.BundleRefused("bad"),
        errors.SecretUnavailable(["X"]),
        BadRequest("bad"),
        errors.BrokerError("other"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_the_broker_answers_refusals_with_protocol_words(exc: errors.ContainAIError) -> None:
    answer = _failure(exc)
    assert answer["ok"] is False and answer["error"] in protocol.REFUSALS


def test_the_stub_speaks_the_broker_ops_the_session_broker_serves() -> None:
    assert {protocol.OP_REDEEM, protocol.OP_REFRESH} == SESSION_STUB_OPS


def test_name_grammars_agree() -> None:
    assert tokens.is_valid_name("GITHUB_TOKEN") and not tokens.is_valid_name("_x")
    assert stub.PLACEHOLDER.pattern == rf"\$\{{({protocol.BROKER_NAME_PATTERN})\}}"
    assert stub.SERVER_NAME.pattern == protocol.SERVER_NAME_PATTERN
    # mcp/config.py anchors its copy with ^...$; the grammar must be the same.
    assert mcp_config.SERVER_NAME.pattern == f"^{protocol.SERVER_NAME_PATTERN}$"
    # Every secret name a config may use is one the broker accepts.
    assert re.fullmatch(protocol.BROKER_NAME_PATTERN, "A" * 64)


def test_the_host_addresses_the_programs_where_the_images_put_them() -> None:
    assert session_mcp.STUB == mcp_render.STUB == protocol.STUB_PROGRAM
    assert session_mcp.server_state("github") == f"{protocol.STUB_STATE}/github"
    assert "uid=65500,gid=65500,mode=0711" in session_mcp.SERVER_TMPFS.format(uid=protocol.mcp_server_uid(0))
    assert egress_sidecar.SOCKET == protocol.PROXY_SOCKET
    assert f"{protocol.RELAY_UID}:{protocol.RELAY_UID}" == egress_sidecar.RELAY_USER
    assert gateway_sidecar.GATEWAY_SOCKET == protocol.GATEWAY_SOCKET
    assert f"{protocol.GATEWAY_UID}:{protocol.GATEWAY_UID}" == gateway_sidecar.USER
    assert session_plan.AGENT_UID == protocol.AGENT_UID and session_plan.WORKSPACE == protocol.WORKSPACE


def test_each_role_has_a_uid_of_its_own() -> None:
    uids = [
        protocol.AGENT_UID,
        protocol.STUB_UID,
        protocol.GATEWAY_UID,
        protocol.RELAY_UID,
        protocol.LOGFWD_UID,
        *(protocol.mcp_server_uid(i) for i in range(protocol.MCP_SERVER_UID_COUNT)),
    ]
    assert len(set(uids)) == len(uids) and 0 not in uids
    assert protocol.is_mcp_server_uid(65500) and protocol.is_mcp_server_uid(65529)
    assert not protocol.is_mcp_server_uid(65499) and not protocol.is_mcp_server_uid(protocol.LOGFWD_UID)
    with pytest.raises(ValueError, match="at most 30"):
        protocol.mcp_server_uid(protocol.MCP_SERVER_UID_COUNT)


@pytest.mark.parametrize(
    ("part", "user", "uid"),
    [
        ("base", "agent", protocol.AGENT_UID),
        ("base", "containai-mcp", protocol.STUB_UID),
        ("gateway", "gateway", protocol.GATEWAY_UID),
        ("logfwd", "logfwd", protocol.LOGFWD_UID),
    ],
)
def test_the_dockerfiles_create_each_role_with_its_protocol_uid(part: str, user: str, uid: int) -> None:
    dockerfile = context(part, "Dockerfile").replace("\\\n", " ")  # continuation lines joined
    assert re.search(rf"useradd [^\n]*--uid {uid} --gid {uid} [^\n]*\b{user}\b", dockerfile), dockerfile


def test_the_gateway_runs_in_its_own_image_as_its_own_user() -> None:
    spec, _ = gateway_sidecar.plan_gateway(
        session_name="s",
        session_id="1",
        labels={},
        channel="dev",
        gateway=_gateway_def(),
        egress_volume="egress",
    )
    assert spec.image == image_tag("gateway", "dev")
    assert spec.user == gateway_sidecar.USER
    assert spec.command[:5] == (
        protocol.GATEWAY_PROGRAM,
        "--listen",
        protocol.GATEWAY_SOCKET,
        "--proxy",
        protocol.GATEWAY_PROXY_SOCKET,  # its own socket to squid, not the agent's
    )
    assert [m.target for m in spec.mounts if m.source == "egress"] == [protocol.EGRESS_GATEWAY_DIR]
    assert "USER gateway" in context("gateway", "Dockerfile")
    assert f"chown gateway:gateway {protocol.GATEWAY_DIR}" in context("gateway", "Dockerfile")


def test_the_proxy_script_serves_the_protocol_socket() -> None:
    script = context("proxy", "containai-proxy-start")
    assert f"UNIX-LISTEN:{protocol.PROXY_SOCKET}," in script
    assert f"UNIX-LISTEN:{protocol.GATEWAY_PROXY_SOCKET},fork,mode=0666 TCP:127.0.0.1:3129" in script
    assert egress_sidecar.GATEWAY_RELAY_PORT == 3129
    assert protocol.EGRESS_GATEWAY_DIR in context("proxy", "Dockerfile")


def test_the_entrypoint_reads_the_allow_list_the_base_image_installs() -> None:
    assert f"COPY env-allow {protocol.ENV_ALLOW_FILE}" in context("base", "Dockerfile")


def _gateway_def() -> GatewayDef:
    definition = get_agent("claude", None).gateway
    assert definition is not None
    return definition
