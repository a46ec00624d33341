#!/usr/bin/env bash
# Install ContainAI from this checkout for local development.
#
#   scripts/setup-local-dev.sh               install into its own virtual environment, link the launchers
#   scripts/setup-local-dev.sh --build       ... then start an engine if none answers, build every image,
#                                            and run `containai doctor`
#   scripts/setup-local-dev.sh --check-only  report what is and is not in place; change nothing
#
# The launchers go into one bin folder, under three channel names each: run-claude-dev (images you
# build here), run-claude (release) and run-claude-nightly; likewise for every launcher, each with a
# PowerShell shim (.ps1) for Windows. One line in your shell profiles puts that folder on PATH (added
# once, never twice).
#
# Environment: CONTAINAI_VENV (default ~/.local/share/containai/venv), CONTAINAI_BIN_DIR (default
# ~/.local/share/containai/bin), CONTAINAI_EXTRA_CA_CERT (CA bundle to trust in builds; with --build the
# host's bundle at /etc/ssl/certs/ca-certificates.crt is used when this is not set).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data_home=${XDG_DATA_HOME:-$HOME/.local/share}
venv=${CONTAINAI_VENV:-$data_home/containai/venv}
bin_dir=${CONTAINAI_BIN_DIR:-$data_home/containai/bin}
marker="# added by ContainAI setup-local-dev.sh"
shim="$repo/scripts/windows/containai-wsl-shim.ps1"
path_line="export PATH=\"$bin_dir:\$PATH\" $marker"

check_only=0
build=0
for arg in "$@"; do
  case "$arg" in
    --check-only) check_only=1 ;;
    --build) build=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-local-dev: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '%s\n' "$*"; }

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup-local-dev: ContainAI needs Python 3.11 or later ($python is older or missing)" >&2
  exit 125
fi
# The launchers, from the one table of programs (src/containai/cli/programs.toml): those with an alias.
programs="$repo/src/containai/cli/programs.toml"
mapfile -t launchers < <("$python" -c '
import sys, tomllib
with open(sys.argv[1], "rb") as table:
    print("\n".join(name for name, row in tomllib.load(table).items() if row.get("alias")))
' "$programs")

# ~/.bashrc for interactive shells, ~/.profile for login shells (the Windows shims use `bash -lc`),
# and ~/.zshrc when there is one.
profiles() {
  printf '%s\n' "$HOME/.bashrc" "$HOME/.profile"
  [ -f "$HOME/.zshrc" ] && printf '%s\n' "$HOME/.zshrc"
  return 0
}

# Every name in the bin folder, with the program it must point at.
expected_links() {
  printf '%s %s\n' containai "$venv/bin/containai"
  local l
  for l in "${launchers[@]}"; do
    printf '%s %s\n' "$l-dev" "$venv/bin/$l" "$l" "$venv/bin/$l" "$l-nightly" "$venv/bin/$l"
  done
}

check() {
  local problems=0 name target profile
  if [ -x "$venv/bin/containai" ]; then
    say "ok      virtual environment $venv"
  else
    say "missing virtual environment $venv"; problems=$((problems + 1))
  fi
  while read -r name target; do
    if [ "$(readlink "$bin_dir/$name" 2>/dev/null)" = "$target" ]; then
      :
    else
      say "missing $bin_dir/$name -> $target"; problems=$((problems + 1))
    fi
  done < <(expected_links)
  while read -r name target; do
    [ "$name" = containai ] && continue
    cmp -s "$shim" "$bin_dir/$name.ps1" || { say "missing $bin_dir/$name.ps1 (Windows shim)"; problems=$((problems + 1)); }
  done < <(expected_links)
  [ "$problems" -eq 0 ] && say "ok      $(expected_links | wc -l) launchers and their Windows shims in $bin_dir"
  while read -r profile; do
    if grep -qF "$marker" "$profile" 2>/dev/null; then
      say "ok      PATH line in $profile"
    else
      say "missing PATH line in $profile"; problems=$((problems + 1))
    fi
  done < <(profiles)
  return "$problems"
}

if [ "$check_only" = 1 ]; then
  if check; then say "ContainAI is set up; nothing to do."; exit 0; fi
  say "run scripts/setup-local-dev.sh to fix the lines above"
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  "$python" -m venv "$venv"
fi
say "installing ContainAI from $repo"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --editable "$repo"

mkdir -p "$bin_dir"
while read -r name target; do
  ln -sfn "$target" "$bin_dir/$name"
  # A PowerShell shim beside every launcher, for Windows users who run ContainAI in WSL.
  [ "$name" = containai ] || install -m 0644 "$shim" "$bin_dir/$name.ps1"
done < <(expected_links)
say "linked $(expected_links | wc -l) launchers into $bin_dir"

while read -r profile; do
  if ! grep -qF "$marker" "$profile" 2>/dev/null; then
    printf '\n%s\n' "$path_line" >> "$profile"
    say "added $bin_dir to PATH in $profile (open a new shell, or: export PATH=\"$bin_dir:\$PATH\")"
  fi
done < <(profiles)

if [ "$build" = 1 ]; then
  "$repo/scripts/ensure-engine.sh"
  ca_args=()
  if [ -z "${CONTAINAI_EXTRA_CA_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    ca_args=(--ca-cert /etc/ssl/certs/ca-certificates.crt)
  fi
  "$bin_dir/containai" images build --agents all "${ca_args[@]}"
  "$bin_dir/containai" doctor
fi
