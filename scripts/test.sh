#!/usr/bin/env bash
# Run ContainAI's tests: lint and types, unit tests, then tests against the real engines.
#
#   scripts/test.sh [PYTEST ARGS...]     e.g. scripts/test.sh tests/unit -q
#
# It makes sure the engines answer first (scripts/ensure-engine.sh --podman: on a fresh Debian
# machine, as root, that installs and starts Docker and Podman's service), keeps its own virtual
# environment in .venv, and builds any missing image (unchanged layers come from the cache).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

scripts/ensure-engine.sh --podman

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --editable '.[test]'

echo "== ruff"
.venv/bin/ruff check src tests
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest "$@"
