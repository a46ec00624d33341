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
