#!/usr/bin/env bash
# Run ContainAI's tests: lint and types, unit tests, then tests against the real engines.
#
#   scripts/test.sh                      everything, as CI runs it (unit coverage printed and checked)
#   scripts/test.sh tests/security       the adversarial suite alone (on Docker and Podman)
#   scripts/test.sh [PYTEST ARGS...]     only what you name, e.g. scripts/test.sh tests/unit -q
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
if [ "$#" -gt 0 ]; then
  echo "== pytest $*"
  exec .venv/bin/pytest "$@"
fi

# Unit tests first, alone, with coverage: the session core and the runtime seam must be covered by
# unit tests (no engine) to at least 85%.
echo "== pytest: unit tests, with coverage"
rm -f .coverage
.venv/bin/pytest tests/unit tests/scripts --cov=containai --cov-report=term:skip-covered
echo "== coverage of session/ and runtime/ by unit tests alone (at least 85%)"
.venv/bin/coverage report --include='*/containai/session/*,*/containai/runtime/*' --fail-under=85 | tail -n 1
echo "== pytest: against the real engines"
.venv/bin/pytest tests/engine
echo "== pytest: the adversarial suite (tests/security)"
exec .venv/bin/pytest tests/security
