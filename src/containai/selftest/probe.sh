# containai selftest's probes: run inside a session's agent container, as the agent, by `bash -s`.
# Each case is an attack a hostile agent would try; each prints one line, for the host to parse:
#     case-id <TAB> held|broke <TAB> what was seen
# From the environment (never arguments, which the process check below would see): SELFTEST_HOST, the
# host's hostname; SELFTEST_PLACEHOLDER, the gateway's placeholder key (not a secret); SELFTEST_PROXY.
# Nothing here sends a packet off the machine: the addresses are documentation ones (TEST-NET,
# 2001:db8::/32), the name is under .invalid, and the proxy refuses that name before any lookup.
set -u
host_name=${SELFTEST_HOST:-}
placeholder=${SELFTEST_PLACEHOLDER:-}
proxy=${SELFTEST_PROXY:-http://127.0.0.1:3128}

say() { printf '%s\t%s\t%s\n' "$1" "$2" "$(printf '%s' "$3" | tr '\t\n' '  ' | cut -c1-200)"; }
status() { awk -v k="$1:" '$1 == k { print $2 }' /proc/self/status; }
mount_opts() { awk -v m="$1" '$2 == m { o = $4 } END { print o }' /proc/mounts; }

uid=$(id -u)
if [ "$uid" != 0 ]; then say non-root held "uid $uid"; else say non-root broke "uid 0 (root)"; fi

eff=$(status CapEff) bnd=$(status CapBnd)
if [ "$((16#$eff))" = 0 ] && [ "$((16#$bnd))" = 0 ]; then
  say no-capabilities held "CapEff $eff, CapBnd $bnd"
else
  say no-capabilities broke "CapEff $eff, CapBnd $bnd"
fi

nnp=$(status NoNewPrivs)
if [ "$nnp" = 1 ]; then say no-new-privileges held "NoNewPrivs 1"; else say no-new-privileges broke "NoNewPrivs ${nnp:-?}"; fi

seccomp=$(status Seccomp)
if [ "$seccomp" = 2 ]; then say seccomp held "Seccomp 2 (filter)"; else say seccomp broke "Seccomp ${seccomp:-?}"; fi

root=$(mount_opts /)
case ",$root," in
  *,ro,*) say read-only-root held "/ is mounted ro" ;;
  *) say read-only-root broke "/ is mounted ${root:-?}" ;;
esac

repo=$(mount_opts /repo)
if [ -z "$repo" ]; then
  say read-only-repo held "no repository mounted in this session"
else
  case ",$repo," in
    *,ro,*) say read-only-repo held "/repo is mounted ro" ;;
    *) say read-only-repo broke "/repo is mounted $repo" ;;
  esac
fi

found=""
for sock in /var/run/docker.sock /run/docker.sock /run/podman/podman.sock /run/containerd/containerd.sock \
  /run/user/*/podman/podman.sock /run/user/*/docker.sock; do
  [ -e "$sock" ] && found="$found $sock"
done
if [ -z "$found" ]; then say no-engine-socket held "no engine socket"; else say no-engine-socket broke "found:$found"; fi

links=$(ls /sys/class/net 2>/dev/null | tr '\n' ' ')
if [ "$links" = "lo " ]; then say loopback-only held "interfaces: lo"; else say loopback-only broke "interfaces: ${links:-?}"; fi

connect() {  # family address port: prints the outcome; exit 0 only when a connection was made
  timeout 4 python3 - "$@" <<'EOF'
import socket, sys
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as s:
    s.settimeout(2)
    try:
        s.connect((sys.argv[2], int(sys.argv[3])))
    except OSError as exc:
        print(exc.strerror or type(exc).__name__)
        sys.exit(1)
print("connected")
EOF
}
if out=$(connect 4 192.0.2.1 443); then
  say no-direct-tcp broke "connected to 192.0.2.1:443 bypassing the proxy"
else
  say no-direct-tcp held "192.0.2.1:443: ${out:-timed out}"
fi
if out=$(connect 6 2001:db8::1 443); then
  say no-ipv6 broke "connected to [2001:db8::1]:443"
else
  say no-ipv6 held "[2001:db8::1]:443: ${out:-timed out}"
fi

if out=$(timeout 4 getent hosts selftest.invalid); then
  say no-dns broke "selftest.invalid resolved: $out"
else
  say no-dns held "no name resolution without the proxy"
fi

code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --proxy "$proxy" http://selftest.invalid/ 2>/dev/null)
case "$code" in
  403) say proxy-refuses held "the proxy answered 403 for a domain not on the allowlist" ;;
  000) say proxy-refuses held "no proxy answers: this session has no way out at all" ;;
  *) say proxy-refuses broke "the proxy answered $code for selftest.invalid" ;;
esac

leaked=""
for file in /proc/self/environ /proc/1/environ; do
  [ -r "$file" ] || continue
  while IFS= read -r -d '' pair; do
    name=${pair%%=*} value=${pair#*=}
    case "$name" in
      *KEY | *TOKEN | *SECRET | *PASSWORD | *_KEY_* | *CREDENTIALS)
        if [ -n "$value" ] && [ "$value" != "$placeholder" ]; then leaked="$leaked $name"; fi ;;
    esac
  done <"$file"
done
if [ -z "$leaked" ]; then
  say no-secrets-in-env held "no secret-named variable with a real value"
else
  say no-secrets-in-env broke "set:$(printf '%s\n' $leaked | sort -u | tr '\n' ' ')"
fi

noexec() {  # case-id folder
  script="$2/.containai-selftest-$$"
  if ! printf '#!/bin/sh\nexit 0\n' >"$script" 2>/dev/null; then
    say "$1" held "$2 is not writable"
    return
  fi
  chmod +x "$script"
  if "$script" 2>/dev/null; then say "$1" broke "a script written to $2 ran"; else say "$1" held "$2 is noexec"; fi
  rm -f "$script"
}
noexec tmp-noexec /tmp
noexec home-noexec "${HOME:-/home/agent}"

cgroup_limit() {  # name: the cgroup v2 file, else v1's
  for file in "/sys/fs/cgroup/$1" "/sys/fs/cgroup/${1%%.*}/$2"; do
    [ -r "$file" ] && { cat "$file"; return; }
  done
}
pids=$(cgroup_limit pids.max pids.max)
case "$pids" in
  '' | max) say pids-limit broke "pids.max is ${pids:-unreadable}" ;;
  *) say pids-limit held "pids.max $pids" ;;
esac
memory=$(cgroup_limit memory.max memory.limit_in_bytes)
case "$memory" in
  '' | max | 9223372036854771712) say memory-limit broke "memory limit is ${memory:-unreadable}" ;;
  *) say memory-limit held "memory.max $memory" ;;
esac

core=$(ulimit -c)
if [ "$core" = 0 ]; then say no-core-dumps held "ulimit -c 0"; else say no-core-dumps broke "ulimit -c $core"; fi

readable=""
for file in /proc/kcore /dev/mem /dev/kmem; do
  head -c1 "$file" >/dev/null 2>&1 && readable="$readable $file"
done
if [ -z "$readable" ]; then say kernel-memory held "/proc/kcore, /dev/mem unreadable"; else say kernel-memory broke "readable:$readable"; fi

setuid=$(find /usr /bin /sbin -xdev -perm -4000 -type f 2>/dev/null | wc -l)
if [ "$setuid" = 0 ]; then
  say setuid held "no setuid programs"
elif [ "$nnp" = 1 ]; then
  say setuid held "$setuid setuid programs, which no_new_privs runs unprivileged"
else
  say setuid broke "$setuid setuid programs, and no_new_privs is off"
fi

mine=$(hostname)
if [ -n "$host_name" ] && [ "$mine" = "$host_name" ]; then
  say own-hostname broke "the host's hostname, $mine"
else
  say own-hostname held "$mine"
fi

others=""
for dir in /proc/[0-9]*; do
  cmd=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null) || continue
  case "$cmd" in
    *dockerd* | *containerd* | *podman* | *conmon* | *systemd* | *squid* | /sbin/init*) others="$others ${dir#/proc/}" ;;
  esac
done
count=$(ls -d /proc/[0-9]* | wc -l)
if [ -z "$others" ]; then
  say own-processes held "$count processes, all the session's"
else
  say own-processes broke "sees processes outside the session (pids$others)"
fi
