"""A Debian bookworm root filesystem made locally with debootstrap, for machines with no registry.

The mirror comes from the host's own apt sources (one-line ``.list`` files and deb822 ``.sources``
files both count), so the image is built from the same place the host installs its packages from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from containai.errors import BootstrapError, HostToolError
from containai.runtime.base import ContainerRuntime, ImageInfo

SUITE = "bookworm"
BOOTSTRAP_TAG = "containai-debian:bookworm"


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _one_line_sources(text: str) -> list[AptSource]:
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):  # options such as [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            found.append(AptSource(words[0], (words[1],), tuple(words[2:])))
    return found


def _deb822_sources(text: str) -> list[AptSource]:
    found = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, _, value = raw.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            found.append(
                AptSource(
                    uri, tuple(fields.get("suites", "").split()), tuple(fields.get("components", "").split())
                )
            )
    return found


def parse_apt_sources(text: str, *, deb822: bool) -> list[AptSource]:
    """Parse one apt sources file: deb822 (``*.sources``) or one-line (``*.list``)."""
    return _deb822_sources(text) if deb822 else _one_line_sources(text)


def read_host_sources(apt_dir: Path = Path("/etc/apt")) -> list[AptSource]:
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(parts.iterdir())
    found: list[AptSource] = []
    for path in files:
        if not path.is_file() or path.suffix not in (".list", ".sources"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        # Some hosts write deb822 stanzas into sources.list itself; tell them apart by content.
        deb822 = path.suffix == ".sources" or any(ln.startswith("Types:") for ln in text.splitlines())
        found += parse_apt_sources(text, deb822=deb822)
    return found


def pick_mirror(sources: Iterable[AptSource], suite: str = SUITE) -> str:
    """The first source that serves the plain ``suite`` with ``main``: the host's Debian mirror."""
    for source in sources:
        if suite in source.suites and "main" in source.components:
            return source.uri.rstrip("/")
    raise BootstrapError(
        f"the host's apt sources have no Debian {suite} mirror with 'main'",
        hint=f"add one to /etc/apt/sources.list (deb http://deb.debian.org/debian {suite} main), "
        "or load debian:bookworm-slim into the engine",
    )


def render_sources_list(sources: Iterable[AptSource], suite: str = SUITE) -> str:
    """sources.list for the image: the host's entries for this release (updates and security too)."""
    lines = []
    for source in sources:
        for name in source.suites:
            if name == suite or name.startswith(f"{suite}-") or name.startswith(f"{suite}/"):
                lines.append(f"deb {source.uri} {name} {' '.join(source.components) or 'main'}")
    return "\n".join(dict.fromkeys(lines)) + "\n"


def bootstrap_base_image(
    runtime: ContainerRuntime,
    *,
    labels: dict[str, str],
    log: Callable[[str], None],
    apt_dir: Path = Path("/etc/apt"),
    tag: str = BOOTSTRAP_TAG,
) -> ImageInfo:
    """debootstrap a minbase bookworm from the host's mirror and import it into the engine as ``tag``."""
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None:
        raise HostToolError(
            "no image registry is reachable and debootstrap is not installed",
            hint="install it (`sudo apt-get install debootstrap`), or load debian:bookworm-slim into the engine",
        )
    if os.geteuid() != 0:
        raise BootstrapError(
            "debootstrap needs root to build the base root filesystem",
            hint="run `sudo containai images build` once, or load debian:bookworm-slim into the engine",
        )
    sources = read_host_sources(apt_dir)
    mirror = pick_mirror(sources)
    log(f"no debian:bookworm-slim image and no registry: bootstrapping Debian {SUITE} from {mirror}")
    with tempfile.TemporaryDirectory(prefix="containai-rootfs-", dir="/var/tmp") as work:
        rootfs = Path(work) / "rootfs"
        _run_logged([debootstrap, "--variant=minbase", SUITE, str(rootfs), mirror], log, "debootstrap")
        (rootfs / "etc/apt/sources.list").write_text(render_sources_list(sources), encoding="utf-8")
        for leftover in (rootfs / "var/lib/apt/lists").glob("*_*"):
            leftover.unlink()
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        tarball = Path(work) / "rootfs.tar"
        _run_logged(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], log, "tar")
        return runtime.import_rootfs(
            tarball,
            tag=tag,
            labels={**labels, "ai.containai.bootstrap-mirror": mirror},
            changes=['CMD ["bash"]', "ENV LANG=C.UTF-8"],
        )


def _run_logged(command: list[str], log: Callable[[str], None], name: str) -> None:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None  # noqa: S101  # PIPE was asked for
    tail: list[str] = []
    for line in process.stdout:
        log(line.rstrip())
        tail = [*tail[-4:], line.rstrip()]
    if process.wait() != 0:
        raise BootstrapError(
            f"{name} failed (exit {process.returncode}): {' | '.join(tail[-2:])}",
            hint="check that the host's Debian mirror answers (`apt-get update`), then build again",
        )
