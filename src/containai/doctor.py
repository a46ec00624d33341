"""`containai doctor`: can ContainAI launch here, and if not, what fixes it.

Each check returns a ``Check``; a failed one blocks launching and carries the fix. The engine and the
host are passed in, so the logic runs in unit tests against a fake runtime.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from containai.config import Paths, resolve_ca_cert
from containai.errors import ContainAIError
from containai.images.build import FROM_LABEL, HASH_LABEL, SLIM_IMAGE, plan_build
from containai.images.catalog import PARTS
from containai.runtime.base import ContainerRuntime, EngineInfo

Status = Literal["ok", "warn", "fail"]

# Free space below these on the engine's data root: warn, then refuse.
DISK_WARN_BYTES = 10 * 2**30
DISK_FAIL_BYTES = 2 * 2**30


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    summary: str
    hint: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"schema": 1, "ok": self.ok, "checks": [asdict(check) for check in self.checks]}


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def docker_forwards_internal_dns(version: tuple[int, int, int]) -> bool:
    """CVE-2024-29018: fixed in 26.0.0, 25.0.4 and 23.0.11; 24.x never got the fix."""
    major = version[0]
    if major >= 26:
        return False
    if major == 25:
        return version < (25, 0, 4)
    if major == 23:
        return version < (23, 0, 11)
    return True


def runc_allows_fd_leak_escape(version_text: str, commit: str) -> bool:
    """CVE-2024-21626 (leaked fd, `-w /proc/self/fd/N`): fixed in runc 1.1.12.

    Debian backports the fix without changing the upstream number: 1.1.5+ds1-1+deb12u1 is fixed.
    """
    version = parse_version(version_text)
    if version is None or version >= (1, 1, 12):
        return False
    debian = re.search(r"\+deb(\d+)u(\d+)", commit)
    return not (debian and (int(debian.group(1)), int(debian.group(2))) >= (12, 1))


def engine_isolation_checks(info: EngineInfo) -> list[Check]:
    checks = []
    if info.runc_version and runc_allows_fd_leak_escape(info.runc_version, info.runc_commit):
        checks.append(
            Check(
                "engine-runc",
                "fail",
                f"runc {info.runc_version} lets a container escape through a leaked host fd (CVE-2024-21626)",
                hint="upgrade runc to 1.1.12 or later (or your distribution's patched build), then restart the engine",
                data={"cve": "CVE-2024-21626", "runc": info.runc_version, "commit": info.runc_commit},
            )
        )
    version = parse_version(info.version)
    if info.kind == "docker" and version is not None and docker_forwards_internal_dns(version):
        checks.append(
            Check(
                "engine-known-issues",
                "warn",
                f"Docker {info.version} forwards DNS queries from --internal networks to the host's resolver "
                "(CVE-2024-29018), so a container on an internal network can leak data through DNS.",
                hint="ContainAI never relies on an internal network alone for isolation; upgrading to "
                "Docker 26.0.0 or later (25.0.4, 23.0.11) closes the engine's side too",
                data={"cve": "CVE-2024-29018", "fixed_in": ["26.0.0", "25.0.4", "23.0.11"]},
            )
        )
    if not any("seccomp" in option for option in info.security_options):
        checks.append(
            Check(
                "engine-seccomp",
                "fail",
                f"{info.kind} {info.version} reports no seccomp support; containers would run without a syscall filter",
                hint="use an engine built with seccomp (Debian's docker.io and podman packages are)",
            )
        )
    if info.rootless:
        checks.append(
            Check(
                "engine-rootless",
                "ok",
                f"{info.kind} runs rootless: sessions will use a shared clone instead of an overlay workspace",
            )
        )
    return checks


def check_engine(runtime: ContainerRuntime) -> tuple[Check, EngineInfo | None]:
    choice = runtime.choice
    try:
        info = runtime.info()
    except ContainAIError as exc:
        return (
            Check(
                "engine",
                "fail",
                str(exc),
                hint=exc.hint,
                data={"url": choice.base_url, "source": choice.source},
            ),
            None,
        )
    return (
        Check(
            "engine",
            "ok",
            f"{info.kind} {info.version} (API {info.api_version}) at {choice.base_url}, {choice.source}",
            data={
                "kind": info.kind,
                "version": info.version,
                "api_version": info.api_version,
                "url": choice.base_url,
                "source": choice.source,
                "rootless": info.rootless,
                "os": info.os,
                "arch": info.arch,
            },
        ),
        info,
    )


def check_git(which: Callable[[str], str | None] = shutil.which) -> Check:
    git = which("git")
    if git is None:
        return Check("git", "fail", "git is not installed", hint="install it: `sudo apt-get install git`")
    result = subprocess.run([git, "--version"], capture_output=True, text=True, check=False)
    return Check("git", "ok", result.stdout.strip() or git, data={"path": git})


def check_images(
    runtime: ContainerRuntime, info: EngineInfo, *, channel: str, ca_bundle: bytes | None
) -> list[Check]:
    base = runtime.image(f"containai-base:{channel}")
    base_image = (base.labels.get(FROM_LABEL) if base else None) or SLIM_IMAGE
    expected = {
        step.part: step
        for step in plan_build(
            PARTS, channel=channel, arch=info.arch, base_image=base_image, ca_bundle=ca_bundle
        )
    }
    missing, stale, current = [], [], []
    for part in PARTS:
        step = expected[part]
        image = runtime.image(step.tag)
        if image is None:
            missing.append(part)
        elif image.labels.get(HASH_LABEL) != step.build_hash:
            stale.append(part)
        else:
            current.append(part)
    checks = []
    build = f"containai images build --channel {channel}"
    if missing:
        checks.append(
            Check(
                "images",
                "fail",
                f"missing: {', '.join(f'containai-{p}:{channel}' for p in missing)}",
                hint=f"build them: `{build} --agents {','.join(missing)}`",
                data={"missing": missing, "stale": stale, "current": current},
            )
        )
    if stale:
        checks.append(
            Check(
                "images-stale",
                "warn",
                f"older than this package: {', '.join(f'containai-{p}:{channel}' for p in stale)}",
                hint=f"rebuild them: `{build} --agents {','.join(stale)}` (unchanged layers are reused)",
                data={"stale": stale},
            )
        )
    if not missing and not stale:
        checks.append(
            Check(
                "images",
                "ok",
                f"all {len(current)} images present and current for channel {channel} (built from {base_image})",
                data={"current": current},
            )
        )
    return checks


def check_disk(info: EngineInfo | None, paths: Paths) -> Check:
    candidates = [Path(info.root_dir)] if info and info.root_dir else []
    candidates.append(paths.state_dir)
    for candidate in candidates:
        probe = candidate
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            usage = shutil.disk_usage(probe)
        except OSError:
            continue
        free_gib = usage.free / 2**30
        summary = f"{free_gib:.1f} GiB free at {candidate}"
        data = {"path": str(candidate), "free_bytes": usage.free}
        hint = "free space (`docker system prune`, `docker builder prune`) before building images"
        if usage.free < DISK_FAIL_BYTES:
            return Check("disk", "fail", summary, hint=hint, data=data)
        if usage.free < DISK_WARN_BYTES:
            return Check("disk", "warn", summary, hint=hint, data=data)
        return Check("disk", "ok", summary, data=data)
    return Check("disk", "warn", "could not measure free disk space", hint="check it with `df -h`")


def run_doctor(
    runtime: ContainerRuntime,
    *,
    environ: Mapping[str, str],
    paths: Paths,
    channel: str = "dev",
    which: Callable[[str], str | None] = shutil.which,
) -> Report:
    engine, info = check_engine(runtime)
    checks = [engine]
    if info is not None:
        checks += engine_isolation_checks(info)
    checks.append(check_git(which))
    if info is not None:
        ca = resolve_ca_cert(None, environ, paths)
        checks += check_images(runtime, info, channel=channel, ca_bundle=ca.value)
        checks.append(
            Check(
                "extra-ca",
                "ok",
                "builds trust no extra CA"
                if ca.value is None
                else f"builds and sessions trust the extra CA {ca.source}",
                data={"source": ca.source},
            )
        )
    checks.append(check_disk(info, paths))
    return Report(tuple(checks))
