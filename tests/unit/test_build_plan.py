from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib
from pathlib import Path
from typing import Any

import pytest

from containai.errors import ImageMissing
from containai.images import build
from containai.images.bootstrap import BOOTSTRAP_TAG
from containai.images.build import (
    CA_FILE,
    FROM_LABEL,
    HASH_LABEL,
    SLIM_IMAGE,
    BuildStep,
    integrity_hex,
    plan_build,
    resolve_base_image,
    run_build,
)
from containai.images.catalog import AGENTS, PARTS, PROGRAMS, Pins, Program, load_pins
from containai.inside import protocol
from containai.runtime.base import BuildEvent, ImageInfo
from containai.runtime.fake import FakeRuntime

CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def plan(**overrides: Any) -> dict[str, BuildStep]:
    options: dict[str, Any] = {"channel": "dev", "arch": "amd64", "base_image": SLIM_IMAGE, "ca_bundle": None}
    options.update(overrides)
    return {step.part: step for step in plan_build(PARTS, **options)}


def hashes(steps: dict[str, BuildStep]) -> dict[str, str]:
    return {part: step.build_hash for part, step in steps.items()}


def changed(before: dict[str, BuildStep], after: dict[str, BuildStep]) -> set[str]:
    return {part for part in PARTS if before[part].build_hash != after[part].build_hash}


def with_agent_version(pins: Pins, agent: str, version: str) -> Pins:
    agents = {**pins.agents, agent: dataclasses.replace(pins.agents[agent], version=version)}
    return dataclasses.replace(pins, agents=agents)


class RecordingReporter:
    """A BuildReporter that keeps what it was told."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.logs: list[str] = []
        self.started: list[str] = []
        self.events: list[tuple[str, BuildEvent]] = []
        self.done: list[tuple[str, bool]] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def log(self, text: str) -> None:
        self.logs.append(text)

    def part_started(self, step: BuildStep) -> None:
        self.started.append(step.part)

    def event(self, step: BuildStep, event: BuildEvent) -> None:
        self.events.append((step.part, event))

    def part_done(self, step: BuildStep, image: ImageInfo, *, cached: bool, seconds: float) -> None:
        assert seconds >= 0
        self.done.append((step.part, cached))


def test_plan_is_deterministic() -> None:
    first, second = plan(ca_bundle=CA), plan(ca_bundle=CA)
    assert hashes(first) == hashes(second)
    assert first == second
    assert len(set(hashes(first).values())) == len(PARTS)


def test_plan_returns_asked_parts_in_build_order_with_the_same_hashes() -> None:
    full = plan()
    some = plan_build(
        ("logfwd", "claude"), channel="dev", arch="amd64", base_image=SLIM_IMAGE, ca_bundle=None
    )
    assert [step.part for step in some] == ["claude", "logfwd"]
    assert [step.build_hash for step in some] == [full["claude"].build_hash, full["logfwd"].build_hash]


def test_steps_carry_tags_labels_and_build_arguments() -> None:
    steps = plan(channel="nightly", arch="aarch64", ca_bundle=CA)
    pins = load_pins()
    base, claude = steps["base"], steps["claude"]
    assert base.tag == "containai-base:nightly"
    assert base.buildargs["NODE_ARCH"] == "arm64"
    assert base.buildargs["NODE_VERSION"] == pins.node_version
    assert base.buildargs["BASE_IMAGE"] == SLIM_IMAGE
    assert base.labels[FROM_LABEL] == SLIM_IMAGE
    assert base.labels["ai.containai.extra-ca-sha256"] == hashlib.sha256(CA).hexdigest()
    assert base.files[CA_FILE] == CA
    assert "Dockerfile" in base.files
    assert claude.buildargs["BASE"] == "containai-base:nightly"
    assert claude.buildargs["AGENT_VERSION"] == pins.agents["claude"].version
    assert claude.labels["ai.containai.agent"] == "claude"
    assert claude.labels["ai.containai.agent-version"] == pins.agents["claude"].version
    assert claude.labels[HASH_LABEL] == claude.build_hash
    assert CA_FILE not in steps["logfwd"].files


def test_without_a_ca_the_images_get_an_empty_ca_file() -> None:
    steps = plan()
    assert steps["base"].files[CA_FILE] == b""
    assert steps["base"].labels["ai.containai.extra-ca-sha256"] == "none"


def test_changing_the_ca_changes_every_image_that_trusts_it() -> None:
    assert changed(plan(), plan(ca_bundle=CA)) == set(PARTS) - {"logfwd"}


def test_changing_an_agent_pin_changes_only_that_agent() -> None:
    pins = load_pins()
    before = plan(pins=pins)
    after = plan(pins=with_agent_version(pins, "claude", "99.0.0"))
    assert changed(before, after) == {"claude"}
    assert after["proxy"].build_hash == before["proxy"].build_hash


def test_changing_the_node_pin_changes_base_and_every_agent() -> None:
    pins = load_pins()
    after = plan(pins=dataclasses.replace(pins, node_version="99.0.0"))
    assert changed(plan(pins=pins), after) == {"base", *AGENTS}


def test_changing_the_base_image_changes_every_image() -> None:
    assert changed(plan(), plan(base_image=BOOTSTRAP_TAG)) == set(PARTS)


def test_changing_the_npm_registry_changes_base_and_agents() -> None:
    assert changed(plan(), plan(npm_registry="https://npm.example")) == {"base", *AGENTS}


@pytest.mark.parametrize(
    ("edited", "affected"),
    [
        ("base", {"base", *AGENTS}),
        ("claude", set(AGENTS)),
        ("proxy", {"proxy"}),
        ("gateway", {"gateway"}),
        ("logfwd", {"logfwd"}),
    ],
)
def test_changing_a_context_file_changes_the_images_built_from_it(
    monkeypatch: pytest.MonkeyPatch, edited: str, affected: set[str]
) -> None:
    before = plan()
    original = build.context_files

    def edited_files(part: str) -> dict[str, bytes]:
        files = original(part)
        if build.context_name(part) == build.context_name(edited):
            files["Dockerfile"] += b"\n# edited\n"
        return files

    monkeypatch.setattr(build, "context_files", edited_files)
    assert changed(before, plan()) == affected


@pytest.mark.parametrize(
    ("module", "affected"),
    [
        ("stub", {"base", *AGENTS}),
        ("entrypoint", {"base", *AGENTS}),
        ("gateway", {"gateway"}),
        ("logfwd", {"logfwd"}),
        ("protocol", {"base", *AGENTS, "gateway", "logfwd"}),
        ("__init__", {"base", *AGENTS, "gateway", "logfwd"}),
    ],
)
def test_changing_an_inside_module_changes_the_images_that_run_it(
    monkeypatch: pytest.MonkeyPatch, module: str, affected: set[str]
) -> None:
    """The build hash covers the containai.inside modules: doctor calls an image stale when one changed."""
    before = plan()
    original = build.inside_module
    monkeypatch.setattr(
        build, "inside_module", lambda name: original(name) + (b"#" if name == module else b"")
    )
    assert changed(before, plan()) == affected


def test_each_image_gets_the_modules_it_runs_and_a_launcher_for_each() -> None:
    steps = plan()
    lib = "lib/containai/inside/"
    for part, modules, commands in (
        ("base", {"stub", "entrypoint"}, {"mcp-stub", "containai-entrypoint"}),
        ("gateway", {"gateway"}, {"containai-gateway"}),
        ("logfwd", {"logfwd"}, {"containai-logfwd"}),
    ):
        files = steps[part].files
        shipped = {name.removeprefix(lib).removesuffix(".py") for name in files if name.startswith(lib)}
        assert shipped == {"__init__", "protocol", *modules}
        assert files[f"{lib}stub.py" if "stub" in modules else f"{lib}protocol.py"] == build.inside_module(
            "stub" if "stub" in modules else "protocol"
        )
        assert {name.removeprefix("bin/") for name in files if name.startswith("bin/")} == commands
        assert b"containai.inside" in files["lib/containai/__init__.py"]
    for part in ("proxy", *AGENTS):
        assert not any(name.startswith(("lib/", "bin/")) for name in steps[part].files)


@pytest.mark.parametrize(
    ("command", "module"), [(p.command, p.module) for ps in PROGRAMS.values() for p in ps]
)
def test_launchers_run_the_module_isolated_from_the_image_copy(command: str, module: str) -> None:
    text = build.render_launcher(Program(command, module)).decode()
    assert text.startswith("#!/usr/bin/python3 -I\n")
    assert f"sys.path.insert(0, {protocol.LIBRARY!r})" in text
    assert f"from containai.inside.{module} import main" in text
    assert text.rstrip().endswith("sys.exit(main())")
    compile(text, command, "exec")
    # The launcher stands where the host expects the program.
    assert f"{protocol.BIN}/{command}" in {
        protocol.STUB_PROGRAM,
        protocol.ENTRYPOINT_PROGRAM,
        protocol.GATEWAY_PROGRAM,
        protocol.LOGFWD_PROGRAM,
    }
    assert callable(importlib.import_module(f"containai.inside.{module}").main)


def test_integrity_hex_matches_hashlib() -> None:
    data = b"node-v22.tar.xz contents"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    assert integrity_hex(integrity) == hashlib.sha512(data).hexdigest()


def test_pinned_integrities_are_sha512_digests() -> None:
    base = plan()["base"]
    assert len(base.buildargs["NODE_SHA512"]) == 128
    assert len(base.buildargs["NPM_SHA512"]) == 128


def test_integrity_hex_refuses_other_algorithms() -> None:
    with pytest.raises(ValueError, match="unsupported integrity"):
        integrity_hex("sha1-" + base64.b64encode(hashlib.sha1(b"x").digest()).decode())  # noqa: S324


def test_unknown_architecture_raises() -> None:
    with pytest.raises(ImageMissing) as caught:
        plan(arch="s390x")
    assert caught.value.tag == "containai-base:dev"
    assert "'s390x'" in (caught.value.hint or "")


def test_run_build_writes_the_context_and_reports_cache_use() -> None:
    runtime = FakeRuntime()
    steps = plan_build(("base", "claude"), channel="dev", arch="amd64", base_image=SLIM_IMAGE, ca_bundle=CA)
    reporter = RecordingReporter()

    built = run_build(runtime, steps, reporter)

    assert [call.tag for call in runtime.builds] == ["containai-base:dev", "containai-claude:dev"]
    for call, step in zip(runtime.builds, steps, strict=True):
        assert call.files == dict(step.files)
        assert call.buildargs == dict(step.buildargs)
        assert call.labels == dict(step.labels)
    assert runtime.builds[0].files[CA_FILE] == CA
    # scripts keep their shebang's promise: the entrypoint is executable in the context, the rest not
    assert runtime.builds[0].executables == {
        name for name, data in steps[0].files.items() if data.startswith(b"#!")
    }
    assert {"bin/containai-entrypoint", "bin/mcp-stub"} <= runtime.builds[0].executables
    assert "Dockerfile" not in runtime.builds[0].executables
    assert [image.labels[HASH_LABEL] for _, image in built] == [step.build_hash for step in steps]
    assert reporter.started == ["base", "claude"]
    assert reporter.done == [("base", False), ("claude", False)]
    assert [part for part, _ in reporter.events] == ["base", "base", "claude", "claude"]

    again = RecordingReporter()
    run_build(runtime, steps, again)
    assert again.done == [("base", True), ("claude", True)]


def test_base_image_already_present() -> None:
    runtime = FakeRuntime()
    runtime.add_image(SLIM_IMAGE)
    runtime.add_image(BOOTSTRAP_TAG)
    assert resolve_base_image(runtime, allow_pull=True, reporter=RecordingReporter(), labels={}) == SLIM_IMAGE
    assert runtime.pulls == []


def test_base_image_bootstrapped_earlier() -> None:
    runtime = FakeRuntime(pullable=[SLIM_IMAGE])
    runtime.add_image(BOOTSTRAP_TAG)
    reporter = RecordingReporter()
    assert resolve_base_image(runtime, allow_pull=True, reporter=reporter, labels={}) == BOOTSTRAP_TAG
    assert runtime.pulls == []
    assert any(BOOTSTRAP_TAG in note for note in reporter.notes)


def test_base_image_pulled() -> None:
    runtime = FakeRuntime(pullable=[SLIM_IMAGE])
    assert resolve_base_image(runtime, allow_pull=True, reporter=RecordingReporter(), labels={}) == SLIM_IMAGE
    assert runtime.pulls == [SLIM_IMAGE]
    assert runtime.image(SLIM_IMAGE) is not None


@pytest.mark.parametrize("allow_pull", [True, False])
def test_base_image_bootstrapped_when_it_cannot_be_pulled(
    monkeypatch: pytest.MonkeyPatch, allow_pull: bool
) -> None:
    runtime = FakeRuntime()
    calls: list[dict[str, str]] = []

    def fake_bootstrap(runtime: FakeRuntime, *, labels: dict[str, str], log: Any) -> ImageInfo:
        calls.append(labels)
        return runtime.import_rootfs(Path("/nonexistent/rootfs.tar"), tag=BOOTSTRAP_TAG, labels=labels)

    monkeypatch.setattr(build, "bootstrap_base_image", fake_bootstrap)
    reporter = RecordingReporter()
    result = resolve_base_image(runtime, allow_pull=allow_pull, reporter=reporter, labels={"k": "v"})
    assert result == BOOTSTRAP_TAG
    assert calls == [{"k": "v"}]
    assert runtime.pulls == ([SLIM_IMAGE] if allow_pull else [])
    assert any("failed" in line for line in reporter.logs) == allow_pull
