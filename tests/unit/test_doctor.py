from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from containai import doctor
from containai.config import Paths
from containai.doctor import Check, Report, run_doctor
from containai.images.bootstrap import BOOTSTRAP_TAG
from containai.images.build import FROM_LABEL, HASH_LABEL, SLIM_IMAGE, plan_build
from containai.images.catalog import PARTS
from containai.runtime.base import EngineInfo
from containai.runtime.fake import FAKE_ENGINE, FakeRuntime

CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
DiskUsage = namedtuple("DiskUsage", ["total", "used", "free"])


def has_git(name: str) -> str | None:
    # Any program that answers --version will do; the interpreter running the tests is always there.
    return sys.executable if name == "git" else None


def no_git(name: str) -> str | None:
    return None


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "state", tmp_path / "logs")


@pytest.fixture(autouse=True)
def plenty_of_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(2**40, 0, 100 * 2**30))


def engine(**changes: object) -> EngineInfo:
    return dataclasses.replace(FAKE_ENGINE, **changes)  # type: ignore[arg-type]


def with_images(
    runtime: FakeRuntime, *, base_image: str = SLIM_IMAGE, ca: bytes | None = None
) -> FakeRuntime:
    for step in plan_build(
        PARTS, channel="dev", arch=runtime.engine_info.arch, base_image=base_image, ca_bundle=ca
    ):
        runtime.add_image(step.tag, step.labels)
    return runtime


def checks(report: Report) -> dict[str, Check]:
    found = {check.name: check for check in report.checks}
    assert len(found) == len(report.checks), "check names are unique"
    return found


def test_all_good(paths: Paths) -> None:
    report = run_doctor(with_images(FakeRuntime()), environ={}, paths=paths, which=has_git)
    found = checks(report)
    assert report.ok
    assert {name: check.status for name, check in found.items()} == {
        "engine": "ok",
        "git": "ok",
        "images": "ok",
        "extra-ca": "ok",
        "disk": "ok",
    }
    assert found["engine"].data["source"] == "fake"
    assert found["git"].summary.startswith("Python ")
    assert found["images"].data["current"] == list(PARTS)
    assert found["extra-ca"].summary == "builds trust no extra CA"


def test_engine_down(paths: Paths) -> None:
    runtime = FakeRuntime(unavailable=True)
    report = run_doctor(runtime, environ={}, paths=paths, which=has_git)
    found = checks(report)
    assert not report.ok
    assert found["engine"].status == "fail"
    assert found["engine"].hint
    assert found["engine"].data == {"url": runtime.choice.base_url, "source": runtime.choice.source}
    assert "images" not in found  # nothing to ask a stopped engine
    assert found["git"].status == "ok"
    assert found["disk"].status == "ok"


@pytest.mark.parametrize(
    ("version", "warns"),
    [
        ("20.10.24", True),
        ("24.0.9", True),
        ("23.0.10", True),
        ("25.0.3", True),
        ("23.0.11", False),
        ("25.0.4", False),
        ("26.1.0", False),
        ("27.0.1", False),
    ],
)
def test_docker_internal_dns_cve(paths: Paths, version: str, warns: bool) -> None:
    runtime = with_images(FakeRuntime(engine_info=engine(version=version)))
    found = checks(run_doctor(runtime, environ={}, paths=paths, which=has_git))
    assert ("engine-known-issues" in found) == warns
    if warns:
        assert found["engine-known-issues"].status == "warn"
        assert found["engine-known-issues"].data["cve"] == "CVE-2024-29018"
        assert version in found["engine-known-issues"].summary


def test_podman_has_no_docker_dns_warning(paths: Paths) -> None:
    runtime = with_images(FakeRuntime(engine_info=engine(kind="podman", version="4.3.1")))
    found = checks(run_doctor(runtime, environ={}, paths=paths, which=has_git))
    assert "engine-known-issues" not in found


@pytest.mark.parametrize(
    ("runc", "commit", "fails"),
    [
        ("1.1.5", "v1.1.5-0-gf19387a", True),
        ("1.1.5+ds1", "1.1.5+ds1-1+deb12u1", False),
        ("1.1.12", "v1.1.12-0-g51d5e94", False),
        ("", "", False),  # engines that do not say (Podman with crun)
    ],
)
def test_runc_fd_leak_cve(paths: Paths, runc: str, commit: str, fails: bool) -> None:
    runtime = with_images(FakeRuntime(engine_info=engine(runc_version=runc, runc_commit=commit)))
    report = run_doctor(runtime, environ={}, paths=paths, which=has_git)
    assert ("engine-runc" in checks(report)) == fails
    assert report.ok != fails


def test_missing_images_fail_with_a_build_hint(paths: Paths) -> None:
    runtime = with_images(FakeRuntime())
    del runtime.images["containai-claude:dev"]
    del runtime.images["containai-proxy:dev"]
    report = run_doctor(runtime, environ={}, paths=paths, which=has_git)
    images = checks(report)["images"]
    assert not report.ok
    assert images.status == "fail"
    assert images.summary == "missing: containai-claude:dev, containai-proxy:dev"
    assert images.hint == "build them: `containai images build --channel dev --agents claude,proxy`"
    assert images.data["missing"] == ["claude", "proxy"]


def test_no_images_at_all(paths: Paths) -> None:
    report = run_doctor(FakeRuntime(), environ={}, paths=paths, channel="nightly", which=has_git)
    images = checks(report)["images"]
    assert images.data["missing"] == list(PARTS)
    assert "--channel nightly" in (images.hint or "")


def test_image_with_another_hash_is_stale(paths: Paths) -> None:
    runtime = with_images(FakeRuntime())
    old = runtime.images["containai-codex:dev"]
    runtime.add_image("containai-codex:dev", {**old.labels, HASH_LABEL: "0" * 64})
    report = run_doctor(runtime, environ={}, paths=paths, which=has_git)
    found = checks(report)
    assert report.ok  # stale images still launch
    assert found["images-stale"].status == "warn"
    assert found["images-stale"].data == {"stale": ["codex"]}
    assert "--agents codex" in (found["images-stale"].hint or "")
    assert "images" not in found


def test_images_built_on_the_bootstrapped_base_are_current(paths: Paths) -> None:
    runtime = with_images(FakeRuntime(), base_image=BOOTSTRAP_TAG)
    assert runtime.images["containai-base:dev"].labels[FROM_LABEL] == BOOTSTRAP_TAG
    found = checks(run_doctor(runtime, environ={}, paths=paths, which=has_git))
    assert found["images"].status == "ok"
    assert BOOTSTRAP_TAG in found["images"].summary


def test_a_new_extra_ca_makes_images_stale(paths: Paths, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(CA)
    runtime = with_images(FakeRuntime())
    report = run_doctor(runtime, environ={"CONTAINAI_EXTRA_CA_CERT": str(bundle)}, paths=paths, which=has_git)
    found = checks(report)
    assert found["images-stale"].data["stale"] == [part for part in PARTS if part != "logfwd"]
    assert str(bundle) in found["extra-ca"].summary

    current = with_images(FakeRuntime(), ca=CA)
    found = checks(
        run_doctor(current, environ={"CONTAINAI_EXTRA_CA_CERT": str(bundle)}, paths=paths, which=has_git)
    )
    assert found["images"].status == "ok"


def test_no_seccomp_fails(paths: Paths) -> None:
    runtime = with_images(FakeRuntime(engine_info=engine(security_options=("name=apparmor",))))
    report = run_doctor(runtime, environ={}, paths=paths, which=has_git)
    assert not report.ok
    assert checks(report)["engine-seccomp"].status == "fail"


def test_rootless_is_reported(paths: Paths) -> None:
    runtime = with_images(FakeRuntime(engine_info=engine(rootless=True)))
    found = checks(run_doctor(runtime, environ={}, paths=paths, which=has_git))
    assert found["engine-rootless"].status == "ok"
    assert found["engine"].data["rootless"] is True


def test_git_missing_fails(paths: Paths) -> None:
    report = run_doctor(with_images(FakeRuntime()), environ={}, paths=paths, which=no_git)
    git = checks(report)["git"]
    assert not report.ok
    assert git.status == "fail"
    assert "apt-get install git" in (git.hint or "")


@pytest.mark.parametrize(("free_gib", "status"), [(1, "fail"), (5, "warn"), (50, "ok")])
def test_disk_space(monkeypatch: pytest.MonkeyPatch, paths: Paths, free_gib: int, status: str) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(2**40, 0, free_gib * 2**30))
    report = run_doctor(with_images(FakeRuntime()), environ={}, paths=paths, which=has_git)
    disk = checks(report)["disk"]
    assert disk.status == status
    assert disk.data["free_bytes"] == free_gib * 2**30
    assert report.ok == (status != "fail")


def test_disk_measures_the_engine_data_root_first(
    monkeypatch: pytest.MonkeyPatch, paths: Paths, tmp_path: Path
) -> None:
    seen: list[Path] = []

    def usage(path: Path) -> DiskUsage:
        seen.append(Path(path))
        return DiskUsage(2**40, 0, 100 * 2**30)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    runtime = with_images(FakeRuntime(engine_info=engine(root_dir=str(tmp_path / "docker" / "missing"))))
    disk = checks(run_doctor(runtime, environ={}, paths=paths, which=has_git))["disk"]
    assert seen == [tmp_path]  # the nearest existing parent
    assert disk.data["path"] == str(tmp_path / "docker" / "missing")


def test_report_json_shape(paths: Paths) -> None:
    report = run_doctor(FakeRuntime(unavailable=True), environ={}, paths=paths, which=no_git)
    data = report.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["schema"] == 1
    assert data["ok"] is False
    assert [check["name"] for check in data["checks"]] == ["engine", "git", "disk"]
    for check in data["checks"]:
        assert set(check) == {"name", "status", "summary", "hint", "data"}
        assert check["status"] in ("ok", "warn", "fail")


def test_parse_version() -> None:
    assert doctor.parse_version("v20.10.24+dfsg1") == (20, 10, 24)
    assert doctor.parse_version("4.3") == (4, 3, 0)
    assert doctor.parse_version("dev") is None
