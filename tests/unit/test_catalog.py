from __future__ import annotations

import pytest

from containai.errors import UsageError
from containai.images.catalog import (
    AGENTS,
    PARTS,
    channel_from_program,
    context_name,
    image_tag,
    load_pins,
    parse_channel,
    parse_parts,
)


def test_base_builds_before_the_agents() -> None:
    assert PARTS[0] == "base"
    assert set(AGENTS) <= set(PARTS)


@pytest.mark.parametrize("text", ["all", "ALL", "codex,all", " all "])
def test_all_is_every_part_in_build_order(text: str) -> None:
    assert parse_parts(text) == PARTS


def test_an_agent_implies_base() -> None:
    assert parse_parts("claude") == ("base", "claude")


def test_parts_come_back_in_build_order_without_duplicates() -> None:
    assert parse_parts("logfwd, Claude ,gateway,proxy,copilot,claude") == (
        "base",
        "copilot",
        "claude",
        "proxy",
        "gateway",
        "logfwd",
    )


def test_non_agent_parts_do_not_imply_base() -> None:
    assert parse_parts("proxy,logfwd,gateway") == ("proxy", "gateway", "logfwd")


def test_unknown_part_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as caught:
        parse_parts("claude,bogus,zzz")
    assert caught.value.message == "unknown image part bogus, zzz"
    assert caught.value.hint is not None
    assert ",".join(PARTS) in caught.value.hint


@pytest.mark.parametrize("text", ["", " , ,"])
def test_empty_parts_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--agents is empty"):
        parse_parts(text)


@pytest.mark.parametrize(("text", "channel"), [("dev", "dev"), (" Prod ", "prod"), ("NIGHTLY", "nightly")])
def test_parse_channel(text: str, channel: str) -> None:
    assert parse_channel(text) == channel


def test_unknown_channel_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown channel 'beta'") as caught:
        parse_channel("beta")
    assert caught.value.hint == "use dev, prod or nightly"


@pytest.mark.parametrize(
    ("program", "channel"),
    [
        ("run-claude-dev", "dev"),
        ("run-claude-nightly", "nightly"),
        ("run-claude", "prod"),
        ("launch-agent-dev", "dev"),
        ("list-agents", "prod"),
    ],
)
def test_channel_from_program(program: str, channel: str) -> None:
    assert channel_from_program(program) == channel


def test_tags_and_context_folders() -> None:
    assert image_tag("claude", "nightly") == "containai-claude:nightly"
    assert context_name("codex") == "agent"
    assert context_name("proxy") == "proxy"
    assert context_name("gateway") == "gateway"


def test_load_pins_reads_the_shipped_file() -> None:
    pins = load_pins()
    assert set(pins.agents) == set(AGENTS)
    assert pins.agents["claude"].package == "@anthropic-ai/claude-code"
    assert pins.agents["claude"].command == "claude"
    assert pins.node_version.count(".") == 2
    assert set(pins.node_integrity) == {"x64", "arm64"}
    assert all(value.startswith("sha512-") for value in [*pins.node_integrity.values(), pins.npm_integrity])
    assert all(pin.version for pin in pins.agents.values())
