#!/usr/bin/env bash
# Make sure a container engine answers, installing and starting one on a fresh Debian machine.
#
#   scripts/ensure-engine.sh            Docker: install docker.io and debootstrap if missing, start dockerd
#   scripts/ensure-engine.sh --podman   also Podman's Docker-compatible service (for the Podman tests)
#   scripts/ensure-engine.sh --stop     stop the daemons that this script started, and nothing else
#
# Daemons it starts are recorded in $CONTAINAI_ENGINE_STATE (default /tmp/containai-engines.pids),
# their logs go to /tmp/containai-dockerd.log and /tmp/containai-podman.log.
set -euo pipefail

state=${CONTAINAI_ENGINE_STATE:-/tmp/containai-engines.pids}
docker_sock=/var/run/docker.sock
podman_sock=/run/podman/podman.sock
want_podman=0
action=up

for arg in "$@"; do
  case "$arg" in
    --podman) want_podman=1 ;;
    --stop) action=stop ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "ensure-engine: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'ensure-engine: %s\n' "$*" >&2; }

answers() { curl -fsS --max-time 3 --unix-socket "$1" http://engine/_ping >/dev/null 2>&1; }

wait_for() {
  local sock=$1 name=$2 i
  for i in $(seq 1 60); do
    answers "$sock" && { say "$name answers on $sock"; return 0; }
    sleep 1
  done
  say "$name did not answer on $sock within 60 s; see its log"
  return 1
}

apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "missing $*: install them as root (sudo apt-get install -y $*)"
    return 1
  fi
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ "$action" = stop ]; then
  [ -f "$state" ] || exit 0
  while read -r pid name; do
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping $name (pid $pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    fi
  done < "$state"
  rm -f "$state"
  exit 0
fi

missing=()
command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "$want_podman" = 1 ]; then
  command -v podman >/dev/null 2>&1 || missing+=(podman)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin:/sbin"

if [ -n "${DOCKER_HOST:-}" ]; then
  say "DOCKER_HOST=$DOCKER_HOST is set; not starting a local dockerd"
elif answers "$docker_sock"; then
  say "Docker already answers on $docker_sock"
else
  if [ "$(id -u)" != 0 ]; then
    say "no Docker engine answers on $docker_sock; start it (sudo systemctl start docker) and run this again"
    exit 1
  fi
  say "starting dockerd (log: /tmp/containai-dockerd.log)"
  nohup dockerd >/tmp/containai-dockerd.log 2>&1 &
  echo "$! dockerd" >> "$state"
  wait_for "$docker_sock" dockerd
fi

if [ "$want_podman" = 1 ]; then
  if answers "$podman_sock"; then
    say "Podman already answers on $podman_sock"
  elif [ "$(id -u)" = 0 ]; then
    mkdir -p "$(dirname "$podman_sock")"
    say "starting podman system service (log: /tmp/containai-podman.log)"
    nohup podman system service --time=0 "unix://$podman_sock" >/tmp/containai-podman.log 2>&1 &
    echo "$! podman" >> "$state"
    wait_for "$podman_sock" podman
  else
    say "Podman's service is not running; start it with: systemctl --user start podman.socket"
  fi
fi
