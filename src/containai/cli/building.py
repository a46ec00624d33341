"""Building images from the CLI, with progress: `containai images build`, and a missing proxy at launch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from containai.cli.app import AppContext
from containai.cli.render import ConsoleBuildReporter
from containai.config import record_ca, resolve_ca_cert
from containai.images.build import BuildStep, plan_build, resolve_base_image, run_build
from containai.images.catalog import LABEL_PREFIX, SCHEMA_VERSION
from containai.runtime.base import ImageInfo


def build_images(
    app: AppContext, parts: Sequence[str], *, channel: str, ca_cert: Path | None = None, no_pull: bool = False
) -> list[tuple[BuildStep, ImageInfo]]:
    """Build ``parts`` for ``channel`` with progress on stderr (also used to build a missing proxy)."""
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
            npm_registry=app.settings().npm_registry.value,
        )
        built = run_build(runtime, steps, reporter)
    record_ca(ca.value, app.paths)
    return built
