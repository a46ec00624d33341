"""The adversarial suite's fixtures: tests/engine's own (engines, labels, images, clean-up), reused.

``sec_engine`` is ``engine`` at module scope: each module's expensive session is started once per
engine (Docker, then Podman) and every case of the module is a test item probed in it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine.conftest import (  # noqa: F401  # fixtures, found by pytest through these names
    Engine,
    cli_env,
    docker_client,
    docker_images,
    podman_client,
    podman_images,
    user_repos,
)

pytestmark = [pytest.mark.engine]


@pytest.fixture(scope="module", params=["docker", "podman"])
def sec_engine(request: pytest.FixtureRequest, cli_env: dict[str, str]) -> Engine:  # noqa: F811
    kind: Any = request.param
    client = request.getfixturevalue(f"{kind}_client")
    request.getfixturevalue(f"{kind}_images")
    return Engine(kind, client, {**cli_env, "CONTAINAI_RUNTIME": kind})
