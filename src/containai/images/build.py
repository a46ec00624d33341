"""Building ContainAI's images: plan (pure), then build each part in order with the layer cache.

Every image carries a ``build-hash`` label: a hash of everything that goes into it (its build files,
the ``containai.inside`` modules it runs, build arguments, the extra CA and its parent's hash).
`containai doctor` recomputes it from the installed package to tell whether an image is stale.

The programs that run inside the images are modules of ``containai.inside``: the build puts the ones
a part runs under ``lib/`` in its context (the Dockerfile copies that to ``/usr/local/lib/containai``)
and a launcher for each under ``bin/`` (copied to ``/usr/local/bin``).
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Protocol

from containai import __version__
from containai.errors import ImageMissing
from containai.images.bootstrap import BOOTSTRAP_TAG, bootstrap_base_image
from containai.images.catalog import (
    AGENTS,
    LABEL_PREFIX,
    PROGRAMS,
    SCHEMA_VERSION,
    Pins,
    Program,
    context_name,
    image_tag,
    load_pins,
)
from containai.inside import protocol
from containai.runtime.base import BuildEvent, BuildSpec, ContainerRuntime, ImageInfo

SLIM_IMAGE = "debian:bookworm-slim"
HASH_LABEL = f"{LABEL_PREFIX}.build-hash"
FROM_LABEL = f"{LABEL_PREFIX}.from"
CA_FILE = "extra-ca.crt"

# Engine architecture names to the ones node's npm packages use.
_NODE_ARCH = {"amd64": "x64", "x86_64": "x64", "arm64": "arm64", "aarch64": "arm64"}


@dataclass(frozen=True)
class BuildStep:
    part: str
    tag: str
    files: Mapping[str, bytes]
    buildargs: Mapping[str, str]
    labels: Mapping[str, str]

    @property
    def build_hash(self) -> str:
        return self.labels[HASH_LABEL]


class BuildReporter(Protocol):
    def note(self, text: str) -> None: ...

    def part_started(self, step: BuildStep) -> None: ...

    def event(self, step: BuildStep, event: BuildEvent) -> None: ...

    def part_done(self, step: BuildStep, image: ImageInfo, *, cached: bool, seconds: float) -> None: ...

    def log(self, text: str) -> None: ...


def integrity_hex(integrity: str) -> str:
    """npm's ``sha512-<base64>`` as the hex digest that ``sha512sum -c`` wants."""
    algorithm, _, digest = integrity.partition("-")
    if algorithm != "sha512":
        raise ValueError(f"unsupported integrity {integrity!r}")
    return base64.b64decode(digest).hex()


def context_files(part: str) -> dict[str, bytes]:
    """A part's build files from the package, as name -> bytes (subfolders as relative paths)."""
    root = resources.files("containai.images").joinpath("context", context_name(part))
    found: dict[str, bytes] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, f"{name}/")
            elif child.name != "__pycache__":
                found[name] = child.read_bytes()

    walk(root, "")
    found.update(program_files(PROGRAMS.get(part, ())))
    return found


INSIDE_PACKAGE = "containai/inside"
IMAGE_PACKAGE_INIT = (
    b'"""ContainAI\'s programs in this image (containai.inside); the rest of the package is on the host."""\n'
)


def render_launcher(program: Program, *, library: str = protocol.LIBRARY) -> bytes:
    """``/usr/local/bin/<command>``: run the module's ``main`` in isolated mode, from the image's copy.

    ``-I`` keeps the environment (PYTHONPATH, PYTHONSTARTUP, user site-packages) and the working
    directory out of the import path: the agent controls those, and the stub runs with secrets."""
    module = f"containai.inside.{program.module}"
    return (
        "#!/usr/bin/python3 -I\n"
        f"# {program.command}: ContainAI's {module}, installed in {library} by the image build.\n"
        "import sys\n"
        "\n"
        f"sys.path.insert(0, {library!r})\n"
        f"from {module} import main  # noqa: E402\n"
        "\n"
        "sys.exit(main())\n"
    ).encode()


def inside_module(name: str) -> bytes:
    """The source of ``containai.inside.<name>``, as installed."""
    return resources.files("containai.inside").joinpath(f"{name}.py").read_bytes()


def program_files(programs: Sequence[Program], *, library: str = protocol.LIBRARY) -> dict[str, bytes]:
    """The modules and launchers of ``programs``, as context files: ``lib/containai/...`` and ``bin/...``.

    Only the modules a part runs (with the package's ``__init__`` and ``protocol``), so that a change to
    one program makes only the images that run it stale. ``library`` is where ``lib/`` will be (tests
    lay the same files out in a temporary folder).
    """
    if not programs:
        return {}
    modules = ["__init__", "protocol", *sorted({p.module for p in programs})]
    files = {f"lib/{INSIDE_PACKAGE}/{m}.py": inside_module(m) for m in modules}
    # A regular package of our own, not a namespace: no other "containai" on sys.path can take its place.
    files["lib/containai/__init__.py"] = IMAGE_PACKAGE_INIT
    files.update({f"bin/{p.command}": render_launcher(p, library=library) for p in programs})
    return files


def compute_hash(
    part: str, files: Mapping[str, bytes], buildargs: Mapping[str, str], parent_hash: str
) -> str:
    digest = hashlib.sha256()
    for key, value in (("schema", SCHEMA_VERSION), ("part", part), ("parent", parent_hash)):
        digest.update(f"{key}={value}\0".encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    for name in sorted(buildargs):
        digest.update(f"arg:{name}={buildargs[name]}\0".encode())
    return digest.hexdigest()


def plan_build(
    parts: Sequence[str],
    *,
    channel: str,
    arch: str,
    base_image: str,
    ca_bundle: bytes | None,
    pins: Pins | None = None,
    npm_registry: str = "https://registry.npmjs.org",
) -> list[BuildStep]:
    """Everything each image build needs, in build order. Pure: no engine, no file writes.

    The base step is always computed (agents hash on it) but returned only when asked for.
    """
    pins = pins or load_pins()
    node_arch = _NODE_ARCH.get(arch)
    if node_arch is None or node_arch not in pins.node_integrity:
        raise ImageMissing(
            f"containai-base:{channel}",
            build_hint=f"no pinned Node.js build for the engine's architecture {arch!r}; "
            "add one to images/pins.toml",
        )
    ca = ca_bundle or b""
    ca_hash = hashlib.sha256(ca).hexdigest() if ca else "none"
    common = {"BASE_IMAGE": base_image}
    steps: list[BuildStep] = []
    hashes: dict[str, str] = {}

    def add(part: str, buildargs: dict[str, str], parent: str) -> None:
        files = context_files(part)
        if part != "logfwd":
            files[CA_FILE] = ca
        build_hash = compute_hash(part, files, buildargs, hashes.get(parent, ""))
        hashes[part] = build_hash
        labels = {
            f"{LABEL_PREFIX}.part": part,
            f"{LABEL_PREFIX}.channel": channel,
            f"{LABEL_PREFIX}.schema": SCHEMA_VERSION,
            f"{LABEL_PREFIX}.version": __version__,
            f"{LABEL_PREFIX}.extra-ca-sha256": ca_hash,
            FROM_LABEL: base_image,
            HASH_LABEL: build_hash,
        }
        if part in AGENTS:
            labels[f"{LABEL_PREFIX}.agent"] = part
            labels[f"{LABEL_PREFIX}.agent-version"] = buildargs["AGENT_VERSION"]
        steps.append(BuildStep(part, image_tag(part, channel), files, buildargs, labels))

    add(
        "base",
        {
            **common,
            "NODE_ARCH": node_arch,
            "NODE_VERSION": pins.node_version,
            "NODE_SHA512": integrity_hex(pins.node_integrity[node_arch]),
            "NPM_VERSION": pins.npm_version,
            "NPM_SHA512": integrity_hex(pins.npm_integrity),
            "NPM_REGISTRY": npm_registry,
        },
        "",
    )
    for agent in AGENTS:
        pin = pins.agents[agent]
        add(
            agent,
            {
                "BASE": image_tag("base", channel),
                "AGENT_PACKAGE": pin.package,
                "AGENT_VERSION": pin.version,
                "AGENT_COMMAND": pin.command,
            },
            "base",
        )
    add("proxy", dict(common), "")
    add("gateway", dict(common), "")
    add("logfwd", dict(common), "")
    return [step for step in steps if step.part in parts]


def resolve_base_image(
    runtime: ContainerRuntime, *, allow_pull: bool, reporter: BuildReporter, labels: Mapping[str, str]
) -> str:
    """debian:bookworm-slim if the engine has it or can pull it; otherwise a local debootstrap."""
    if runtime.image(SLIM_IMAGE) is not None:
        return SLIM_IMAGE
    if runtime.image(BOOTSTRAP_TAG) is not None:
        reporter.note(f"using {BOOTSTRAP_TAG}, bootstrapped earlier from the host's Debian mirror")
        return BOOTSTRAP_TAG
    if allow_pull:
        try:
            runtime.pull(SLIM_IMAGE)
            reporter.note(f"pulled {SLIM_IMAGE}")
            return SLIM_IMAGE
        except Exception as exc:  # any failure to pull means: bootstrap instead
            reporter.log(f"pull {SLIM_IMAGE} failed: {exc}")
    image = bootstrap_base_image(runtime, labels=dict(labels), log=reporter.log)
    reporter.note(f"bootstrapped {BOOTSTRAP_TAG} with debootstrap ({image.id[:19]})")
    return BOOTSTRAP_TAG


class _CacheTracker:
    """Whether every build step came from the cache, while passing the events on.

    A step ran unless the engine said "Using cache" for it; FROM, and ARGs before the first FROM,
    never do. (The classic builder prints "Running in" only for RUN, so COPY changes would go
    unnoticed if those were counted instead.)
    """

    def __init__(self, step: BuildStep, reporter: BuildReporter) -> None:
        self.step = step
        self.reporter = reporter
        self.uncached: list[bool] = []
        self.seen_from = False

    def __call__(self, event: BuildEvent) -> None:
        if event.step:
            instruction = event.text.split(":", 1)[-1].strip().split(" ", 1)[0].upper()
            exempt = instruction == "FROM" or (instruction == "ARG" and not self.seen_from)
            self.seen_from = self.seen_from or instruction == "FROM"
            self.uncached.append(not exempt)
        elif event.cached and self.uncached:
            self.uncached[-1] = False
        self.reporter.event(self.step, event)

    @property
    def cached(self) -> bool:
        return not any(self.uncached)


def run_build(
    runtime: ContainerRuntime, steps: Sequence[BuildStep], reporter: BuildReporter
) -> list[tuple[BuildStep, ImageInfo]]:
    """Build each step in order; a step whose cache covers every instruction counts as cached."""
    built = []
    for step in steps:
        reporter.part_started(step)
        started = time.monotonic()
        tracker = _CacheTracker(step, reporter)

        with tempfile.TemporaryDirectory(prefix=f"containai-build-{step.part}-") as work:
            context = Path(work)
            for name, data in step.files.items():
                target = context / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                if data.startswith(b"#!"):
                    target.chmod(0o755)
            image = runtime.build(BuildSpec(context, step.tag, step.buildargs, step.labels), tracker)
        reporter.part_done(step, image, cached=tracker.cached, seconds=time.monotonic() - started)
        built.append((step, image))
    return built
