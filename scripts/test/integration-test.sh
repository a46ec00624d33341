#!/usr/bin/env bash
# End-to-end runs of the real agent CLIs in real sessions, against local mock model APIs on a fake
# internet of containers (nothing leaves the machine).
#
#   scripts/test/integration-test.sh                      every agent CLI through the proxy
#   scripts/test/integration-test.sh --with-host-secrets  also: a canary key stored on the host reaches
#                                                         the mock through the credential gateway, and
#                                                         nothing the agent can read holds it; an MCP
#                                                         server gets a host secret through the stub
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tests=(tests/engine/test_agent_clis.py)
for arg in "$@"; do
  case "$arg" in
    --with-host-secrets) tests+=(tests/engine/test_gateway.py tests/engine/test_mcp.py) ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "integration-test: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
exec "$repo/scripts/test.sh" "${tests[@]}" -q
