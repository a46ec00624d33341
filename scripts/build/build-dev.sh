#!/usr/bin/env bash
# Build ContainAI's dev images: a thin wrapper over `containai images build --channel dev`.
#
#   scripts/build/build-dev.sh [--agents copilot,codex,claude,proxy,gateway,logfwd|all] [--ca-cert PATH] [...]
#
# Every option is passed through. It uses the installed `containai` when there is one on PATH, and the
# package in this checkout otherwise.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if command -v containai >/dev/null 2>&1; then
  exec containai images build --channel dev "$@"
fi
for python in "$repo/.venv/bin/python" "${XDG_DATA_HOME:-$HOME/.local/share}/containai/venv/bin/python"; do
  if [ -x "$python" ]; then
    exec "$python" -m containai images build --channel dev "$@"
  fi
done
echo "build-dev: ContainAI is not installed; run scripts/setup-local-dev.sh first" >&2
exit 125
