"""Unit tests run apart from the developer's engine and settings.

This lives in tests/unit rather than tests/: the engine tests read CONTAINAI_EXTRA_CA_CERT in their
bodies to check the CA the images were built with, so clearing it for them would break them.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONTAINAI_HOME", str(tmp_path / "containai-home"))
    for name in ("DOCKER_HOST", "CONTAINAI_RUNTIME", "CONTAINAI_EXTRA_CA_CERT", "CONTAINAI_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_watchdog_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions on the local ports (the commands' tests, on a FakeRuntime) start no host process: the
    disk watchdog's start does nothing (tests/unit/test_disk.py starts a real one on purpose)."""
    from containai.session import watchdog

    monkeypatch.setattr(watchdog, "start", lambda state_dir, **_: 0)
