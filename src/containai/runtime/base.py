"""The seam between ContainAI's logic and a container engine.

``ContainerRuntime`` is what the rest of the package calls; ``EngineRuntime`` implements it over the
Docker Engine API (Docker, or Podman's compatible service) and ``FakeRuntime`` in
``containai.runtime.fake`` implements it in memory for unit tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from containai.runtime.select import EngineChoice, EngineKind


@dataclass(frozen=True)
class EngineInfo:
    """What the engine says about itself, parsed once at the boundary."""

    kind: EngineKind
    version: str
    api_version: str
    os: str
    arch: str
    rootless: bool
    security_options: tuple[str, ...] = ()
    storage_driver: str = ""
    root_dir: str = ""
    runc_version: str = ""  # as the engine reports it; empty when it does not (Podman often uses crun)
    runc_commit: str = ""


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    created: str = ""
    size: int = 0


@dataclass(frozen=True)
class BuildEvent:
    """One line of build progress: a step (``Step 3/9 : RUN ...``), output, cache use, or a step run."""

    text: str
    step: bool = False
    cached: bool = False
    ran: bool = False


class ContainerRuntime(Protocol):
    choice: EngineChoice

    def info(self) -> EngineInfo: ...

    def image(self, ref: str) -> ImageInfo | None: ...

    def pull(self, ref: str) -> ImageInfo: ...

    def build(
        self,
        *,
        context: Path,
        tag: str,
        buildargs: Mapping[str, str],
        labels: Mapping[str, str],
        on_event: Callable[[BuildEvent], None],
    ) -> ImageInfo: ...

    def import_rootfs(
        self, tarball: Path, *, tag: str, labels: Mapping[str, str], changes: Sequence[str] = ()
    ) -> ImageInfo: ...

    def close(self) -> None: ...
