"""The suite's session: one real, hostile-minded ContainAI session per engine, and what it exposes.

``attack_session`` starts, on one engine, a fake internet (tests/engine/fakenet.py), a host canary
on every host address, a persistent ``claude`` session through the egress lab (its gateway holds a
canary API key, its MCP server a canary secret, both stored on the host) and a neighbouring ``shell``
session. It runs every agent-side probe of ``cases.CASES`` inside the agent's container as the agent,
the selftest's probe.sh unchanged, then the exhaustion attacks while timing the host, the proxy
sidecar and the broker from the host; it keeps what the host can see (inspect, logs, image history,
audit) in an ``Observed``, and removes everything, asserting nothing of it is left.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import ipaddress
import json
import socket
import subprocess
import tarfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from containai.config import Hooks
from containai.gateway.sidecar import PLACEHOLDER
from containai.inside.protocol import MCP_SERVER_UID_COUNT, MCP_SERVER_UID_FIRST
from containai.runtime.base import ExecSpec
from containai.selftest.cases import parse_probe_output
from containai.selftest.runner import probe_script

from ..engine.conftest import BIN, CHANNEL, LABELS, RUN_ID, SESSION_SCOPE, TEST_LABEL, Engine
from ..engine.fakenet import ULIMITS, FakeInternet
from ..engine.lab_cli import install_lab_programs, lab_of
from ..engine.test_gateway import forms, store_secret
from ..engine.test_sessions import git, launcher, make_repo
from .cases import CASES, Agent, Case

SESSION_LABEL = "ai.containai.session"
ANSWER_SECONDS = 2.0  # what "keeps answering" means for the host, the proxy and the broker

# A stdio MCP server with one tool that answers the sha256 of its CANARY (as in test_mcp.py), run by
# its stub under the server's own uid (65500 and up); its code is in its arguments, never in the agent's workspace.
CANARY_SERVER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    for line in sys.stdin:
        m = json.loads(line)
        if "id" not in m:
            continue
        if m["method"] == "initialize":
            r = {"protocolVersion": m["params"]["protocolVersion"], "capabilities": {"tools": {}},
                 "serverInfo": {"name": "canary", "version": "1"}}
        elif m["method"] == "tools/call":
            r = {"content": [{"type": "text", "text": hashlib.sha256(os.environ["CANARY"].encode()).hexdigest()}]}
        else:
            r = {"tools": []}
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}), flush=True)
    """
)

# As the agent: a tool call through the stub (so the stub and the server are running), then what an
# attacker reads of them and of the broker, then everything readable, for the host to search.
COLLECT = textwrap.dedent(
    """
    import errno, json, os, socket, subprocess, sys
    stub = subprocess.Popen(["mcp-stub", "connect", "canary"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    def ask(message):
        stub.stdin.write((json.dumps(message) + "\\n").encode()); stub.stdin.flush()
        return json.loads(stub.stdout.readline()) if "id" in message else None
    ask({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
         "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}})
    answer = ask({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "report", "arguments": {}}})
    print("R tool", answer["result"]["content"][0]["text"])
    FIRST, COUNT = MCP_UIDS
    tried = {}
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            uid = int(open(f"/proc/{pid}/status").read().split("\\nUid:\\t", 1)[1].split()[0])
            if not FIRST <= uid < FIRST + COUNT:
                continue
        except OSError:
            continue
        for what in ("environ", "mem", "fd/0"):
            try:
                open(f"/proc/{pid}/{what}", "rb").read(1)
                tried[f"{pid}/{what}"] = "read"
            except OSError as exc:
                tried[f"{pid}/{what}"] = errno.errorcode[exc.errno]
    print("R procs", json.dumps(tried))
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect("/run/containai/broker/broker.sock")
        s.sendall(json.dumps({"op": "redeem", "token": "x", "session": "s", "container": "c", "bundle": "",
                              "consumer": "canary"}).encode() + b"\\n")
        print("R broker", s.recv(4096).decode().strip())
    except OSError as exc:
        print("R broker", json.dumps({"error": errno.errorcode.get(exc.errno, "?")}))
    os.makedirs("/tmp/seen", exist_ok=True)
    with open("/tmp/seen/proc", "wb") as out:
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            for what in ("environ", "cmdline"):
                try:
                    out.write(open(f"/proc/{pid}/{what}", "rb").read() + b"\\n")
                except OSError:
                    pass
    stub.stdin.close(); stub.wait()
    """
).replace("MCP_UIDS", f"({MCP_SERVER_UID_FIRST}, {MCP_SERVER_UID_COUNT})")
DUMP = "tar -cz /tmp/seen /run /home /etc /workspace 2>/dev/null | base64 -w0"

PRELUDE = (
    "held() { printf 'held\\t%s\\n' \"$*\"; exit 0; }\nbroke() { printf 'broke\\t%s\\n' \"$*\"; exit 0; }\n"
)


def render_agent_probes(values: dict[str, str], cases: Sequence[Case] = CASES) -> str:
    """One bash script, fed on stdin, that runs each ``Agent`` case and prints ``id<TAB>held|broke<TAB>…``."""
    lines = []
    for case in cases:
        if not isinstance(case.probe, Agent):
            continue
        script = case.probe.script
        for name, value in values.items():
            script = script.replace(f"@{name}@", value)
        body = base64.b64encode((PRELUDE + script + "\nbroke 'the probe said neither'\n").encode()).decode()
        lines.append(
            f"r=$(echo {body} | base64 -d | timeout 30 bash 2>/dev/null | grep -m1 -E '^(held|broke)\t'); "
            f"printf '%s\\t%s\\n' {case.id} \"${{r:-broke\tno answer}}\""
        )
    return "\n".join(lines) + "\n"


def parse_agent_results(text: str) -> dict[str, tuple[bool, str]]:
    found: dict[str, tuple[bool, str]] = {}
    for line in text.splitlines():
        fields = line.split("\t", 2)
        if len(fields) == 3 and fields[1] in ("held", "broke"):
            found.setdefault(fields[0], (fields[1] == "held", fields[2]))
    return found


def r_lines(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        if line.startswith("R "):
            _, name, value = [*line.split(" ", 2), ""][:3]
            found[name] = value.strip()
    return found


class HostCanary:
    """A TCP listener on every host address (this test's own), counting who connects."""

    def __init__(self) -> None:
        self.accepted: list[str] = []
        self._server = socket.socket()
        self._server.bind(("0.0.0.0", 0))  # noqa: S104  # the canary listens where a host service would
        self._server.listen()
        self._server.settimeout(0.3)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._server.accept()
            except OSError:
                continue
            self.accepted.append(peer[0])
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()


@contextlib.contextmanager
def host_http() -> Iterator[str]:
    """A local HTTP server: "the host" whose answers the exhaustion cases time."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    try:
        action()
    except Exception:
        return float("inf")
    return time.monotonic() - started


@dataclass
class Observed:
    """What the session showed: the probes' verdicts, and what the host can see of it."""

    engine: Engine
    env: dict[str, str]
    results: dict[str, tuple[bool, str]] = field(default_factory=dict)
    canaries: list[str] = field(default_factory=list)
    texts: dict[str, list[str]] = field(default_factory=dict)  # inspect, logs, history
    dump: list[bytes] = field(default_factory=list)
    collected: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # container name -> Mounts
    host_hits: int = -1
    host_control_hits: int = 0
    fake_before: tuple[int, int] = (0, 0)
    fake_after: tuple[int, int, int, int] = (0, 0, 0, 0)
    vscode: list[dict[str, Any]] = field(default_factory=list)
    audit: subprocess.CompletedProcess[str] | None = None
    exhaustion: dict[str, tuple[bool, str]] = field(default_factory=dict)

    def verdict(self, case_id: str) -> tuple[bool, str]:
        from .cases import BY_ID, Host

        probe = BY_ID[case_id].probe
        if isinstance(probe, Host):
            return probe.check(self)
        return self.results.get(case_id, (False, "the probe did not report this case"))

    # --- host-side checks (cases.Host) ---------------------------------------------------------

    def no_socket_mounts(self) -> tuple[bool, str]:
        bad = [
            m.get("Source", "")
            for mounts in self.mounts.values()
            for m in mounts
            if m.get("Source", "").endswith(".sock")
            or m.get("Source", "").startswith(("/var/run", "/run/docker"))
        ]
        return (
            not bad,
            f"socket mounts: {bad}" if bad else f"{len(self.mounts)} containers, no socket mount",
        )

    def host_canary_untouched(self) -> tuple[bool, str]:
        if self.host_control_hits < 1:
            return False, "the control container never reached the host canary: no leak could be seen"
        return self.host_hits == 0, f"{self.host_hits} connections from the session"

    def no_shared_volumes(self) -> tuple[bool, str]:
        agent, neighbour = (
            {m.get("Name") or m.get("Source") for m in self.mounts.get(role, [])}
            for role in ("agent", "neighbour")
        )
        shared = (agent & neighbour) - {None, ""}
        return not shared, f"shared: {sorted(shared)}" if shared else "no mount in common"

    def fake_internet_untouched(self) -> tuple[bool, str]:
        hits, queries, evil, leaked = self.fake_after
        before_hits, before_queries = self.fake_before
        new = (hits - before_hits, queries - before_queries, evil, leaked)
        return new == (
            0,
            0,
            0,
            0,
        ), f"canary hits, DNS queries, evil.test requests, queries with the mark: {new}"

    def canaries_absent_from_dump(self) -> tuple[bool, str]:
        if not any(b"HOME=/home/agent" in data for data in self.dump):
            return False, "the dump missed the processes' environments: nothing was searched"
        found = [
            form
            for data in self.dump
            for canary in self.canaries
            for form in forms(canary)
            if form.encode() in data
        ]
        return not found, f"{len(self.dump)} files searched" + (f", found {len(found)}" if found else "")

    def canaries_absent(self, what: str) -> tuple[bool, str]:
        texts = self.texts.get(what, [])
        if not texts:
            return False, f"nothing to search in {what}"
        found = [form for text in texts for canary in self.canaries for form in forms(canary) if form in text]
        return not found, f"{len(texts)} {what} texts searched" + (f", found {len(found)}" if found else "")

    def stub_proc_unreadable(self) -> tuple[bool, str]:
        tried = json.loads(self.collected.get("procs", "{}"))
        digest_ok = len(self.collected.get("tool", "")) == 64
        if not digest_ok or len(tried) < 6:
            return (
                False,
                f"the stub and its server were not both seen: {self.collected.get('tool')!r} {tried}",
            )
        opened = {k: v for k, v in tried.items() if v not in ("EACCES", "EPERM")}
        return not opened, f"{len(tried)} files tried" + (f", opened {opened}" if opened else ", all refused")

    def broker_refused_agent(self) -> tuple[bool, str]:
        answer = self.collected.get("broker", "")
        try:
            error = json.loads(answer).get("error")
        except ValueError:
            error = None
        return error in ("peer-refused", "EACCES", "EPERM", "ENOENT"), f"the broker answered {answer[:120]}"

    def vscode_config_withholds(self) -> tuple[bool, str]:
        from ..engine.test_sessions import VSCODE_BLANKED, VSCODE_PROTECTIONS

        if not self.vscode:
            return False, "no attach config was written"
        wrong = [
            key
            for config in self.vscode
            for key, value in VSCODE_PROTECTIONS.items()
            if config["settings"].get(key) != value
        ]
        wrong += [v for config in self.vscode for v in VSCODE_BLANKED if config["remoteEnv"].get(v) != ""]
        return not wrong, f"not withheld: {wrong}" if wrong else f"{len(self.vscode)} configs withhold all"

    def audit_verifies(self) -> tuple[bool, str]:
        if self.audit is None:
            return False, "the audit was not verified"
        return self.audit.returncode == 0, (self.audit.stdout + self.audit.stderr).strip()[-200:]


def agent_exec(
    engine: Engine, name: str, script: str | bytes, user: str, environment: dict[str, str] | None = None
) -> str:
    """``script`` fed on stdin to bash in container ``name`` as ``user`` (no trace of it in any cmdline)."""
    runtime = engine.runtime()
    try:
        output: list[bytes] = []
        data = script.encode() if isinstance(script, str) else script
        runtime.exec(
            name,
            ExecSpec(("bash", "-s"), user=user, environment=environment or {}, stdin=data, timeout=600),
            on_output=lambda stream, chunk: output.append(chunk) if stream == "stdout" else None,
        )
    finally:
        runtime.close()
    return b"".join(output).decode("utf-8", "replace")


def leftovers(client: Any) -> list[str]:
    """Everything of this test run on the engine: sessions (by scope) and the tests' own containers."""
    found = []
    for selector in ({"label": SESSION_SCOPE}, {"label": f"{TEST_LABEL}={RUN_ID}"}):
        found += [f"container {c.name}" for c in client.containers.list(all=True, filters=selector)]
        found += [f"volume {v.name}" for v in client.volumes.list(filters=selector)]
        found += [f"network {n.name}" for n in client.networks.list(filters=selector)]
    return found


def launch(env: dict[str, str], *args: str) -> str:
    launched = launcher(env, "launch-agent", *args, "--channel", CHANNEL, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    return launched.stdout.strip()


@contextlib.contextmanager
def attack_session(engine: Engine, tmp: Path) -> Iterator[Observed]:
    client = engine.client
    fake = FakeInternet(client, image=f"containai-base:{CHANNEL}", labels=LABELS, run_id=RUN_ID).start()
    canary_host = HostCanary()
    home = tmp / "home"
    home.mkdir()
    lab_bin = install_lab_programs(tmp / "lab-bin", Hooks(lab=lab_of(fake)))
    env = {
        **engine.env,
        "HOME": str(home),
        "CONTAINAI_HOME": str(tmp / "containai"),
        "PATH": f"{lab_bin}:{BIN}:{engine.env.get('PATH', '')}",
        "GIT_CONFIG_GLOBAL": str(tmp / "gitconfig"),
        "CONTAINAI_GATEWAY_UPSTREAM": "http://api.mock.test",
    }
    seen = Observed(engine, env)
    names: list[str] = []
    try:
        gateway_key, mcp_secret = f"sk-ant-canary-{uuid.uuid4().hex}", f"mcp-canary-{uuid.uuid4().hex}"
        git_secret, ignored_secret = f"gitcred{uuid.uuid4().hex}", f"ignored{uuid.uuid4().hex}"
        seen.canaries = [gateway_key, mcp_secret, git_secret, ignored_secret]
        store_secret(env, "ANTHROPIC_API_KEY", gateway_key)
        store_secret(env, "MCP_CANARY", mcp_secret)
        config = Path(env["CONTAINAI_HOME"]) / "config" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            f'[mcp_servers.canary]\ncommand = "python3"\nargs = ["-I", "-c", {json.dumps(CANARY_SERVER)}]\n'
            'env = { CANARY = "${MCP_CANARY}" }\n'
        )
        repo = make_repo(tmp)
        git(repo, "config", "remote.origin.url", f"https://user:{git_secret}@git.invalid/r.git")
        (repo / ".gitignore").write_text(".env\n")
        git(repo, "add", ".gitignore")
        git(repo, "commit", "-q", "-m", "ignore .env")
        (repo / ".env").write_text(f"TOKEN={ignored_secret}\n")
        neighbour_repo = make_repo(tmp)
        mark = f"neighbour{uuid.uuid4().hex}"
        allow = [
            a
            for d in ("allowed.test", ".rebind.test", "metadata.test", "api.mock.test")
            for a in ("--allow-domain", d)
        ]
        name = launch(env, "claude", str(repo), *allow, "--memory", "2g")
        names.append(name)
        neighbour = launch(env, "shell", str(neighbour_repo))
        names.append(neighbour)
        agent = client.containers.get(name)
        user = agent.attrs["Config"]["User"]
        other = client.containers.get(neighbour)
        agent_exec(
            engine,
            neighbour,
            f"echo {mark} > /tmp/{mark}; echo {mark} > /workspace/{mark}\n"
            f'nohup python3 -c \'import socket,time; s=socket.socket(socket.AF_UNIX); s.bind("\\0{mark}"); '
            f"s.listen(); time.sleep(3600)' {mark} >/dev/null 2>&1 &\nsleep 1\n",
            other.attrs["Config"]["User"],
        )

        # The host's side before the agent's probes: gateways, the control's reach of the host canary.
        gateways = sorted(
            {
                c["Gateway"]
                for n in client.networks.list()
                for c in (n.attrs.get("IPAM") or {}).get("Config") or []
                if c.get("Gateway") and ":" not in c["Gateway"]
            }
        )
        bridge = client.containers.run(
            f"containai-base:{CHANNEL}",
            ["bash", "-c", f"exec 3<>/dev/tcp/{gateways[0]}/{canary_host.port}"],
            entrypoint=[],
            remove=True,
            labels=LABELS,
            network_mode="bridge",
            ulimits=ULIMITS,
        )
        del bridge
        seen.host_control_hits = len(canary_host.accepted)
        seen.fake_before = (len(fake.canary_hits()), 0)
        allowed = fake.ip("allowed")
        values = {
            "PROXY": "http://127.0.0.1:3128",
            "CANARY": fake.ip("canary"),
            "DNS": fake.dns_ip,
            "ALLOWED_IP": allowed,
            "ALLOWED_DECIMAL": str(int(ipaddress.ip_address(allowed))),
            "GATEWAYS": " ".join(gateways),
            "HOST_PORT": str(canary_host.port),
            "NEIGHBOUR_MARK": mark,
            "GIT_SECRET": git_secret,
            "IGNORED_SECRET": ignored_secret,
        }
        script = render_agent_probes(values)
        # The marks are searched for by the probes: they must not sit in this script's own files.
        seen.results.update(parse_agent_results(agent_exec(engine, name, script, user)))
        selftest = agent_exec(
            engine,
            name,
            probe_script(),
            user,
            {"SELFTEST_HOST": socket.gethostname(), "SELFTEST_PLACEHOLDER": PLACEHOLDER},
        )
        for result in parse_probe_output(selftest):
            seen.results[result.case.id] = (result.held, result.detail)
        collected = agent_exec(engine, name, f'python3 -c {shell(COLLECT)}\necho "R dump $({DUMP})"\n', user)
        seen.collected = r_lines(collected)
        with tarfile.open(
            fileobj=io.BytesIO(base64.b64decode(seen.collected.pop("dump", ""))), mode="r:gz"
        ) as tar:
            seen.dump = [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
        seen.host_hits = len(canary_host.accepted) - seen.host_control_hits
        # The proxy itself resolves the allowed names it is asked for: only queries for a forbidden
        # name, or carrying the probes' mark, would be the agent's.
        seen.fake_after = (
            len(fake.canary_hits()),
            len([q for q in fake.dns_queries() if "evil" in q["qname"].lower()]),
            len(fake.http_requests("evil")),
            len([q for q in fake.dns_queries() if mark in q["qname"]]),
        )

        # The host's view of the session's containers.
        session_id = agent.labels[SESSION_LABEL]
        containers = client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session_id}"})
        seen.mounts = {c.name: c.attrs.get("Mounts") or [] for c in containers}
        seen.mounts["agent"] = agent.attrs.get("Mounts") or []
        seen.mounts["neighbour"] = other.attrs.get("Mounts") or []
        seen.texts["inspect"] = [json.dumps(c.attrs) for c in containers]
        seen.texts["logs"] = [c.logs().decode(errors="replace") for c in containers]
        images = {c.attrs.get("Config", {}).get("Image") or c.image.id for c in containers}
        seen.texts["history"] = [json.dumps(client.api.history(image)) for image in images]
        seen.texts["history"] += [json.dumps(client.images.get(image).attrs) for image in images]
        storage = home / ".config/Code/User/globalStorage/ms-vscode-remote.remote-containers/nameConfigs"
        seen.vscode = [json.loads(p.read_text()) for p in storage.glob("*.json")]
        seen.audit = subprocess.run(
            [str(lab_bin / "containai"), "audit", "verify", name],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        seen.exhaustion = exhaust(engine, env, name, user, session_id)
        yield seen
    finally:
        for made in names:
            launcher(env, "remove-agent", made, "--no-push", "--yes", timeout=300)
        canary_host.close()
        fake.close()
    left = leftovers(client)
    assert left == [], f"the suite's session left {left}"


def shell(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


ATTACKS = {
    # Each keeps up its pressure until its timeout kills its whole process group, so that it is at
    # work when the host side is timed, and over before the next one starts.
    "fork-bomb": "timeout -s KILL 12 bash -c 'b() { b & b & wait; }; b' >/dev/null 2>&1",
    # Allocating past the limit, over and over: each balloon ends in the OOM killer.
    "memory-balloon": (
        'timeout -s KILL 12 bash -c \'while :; do python3 -c "x = []\nwhile True: x.append(bytes([1]) * (64 << 20))"; '
        "done' >/dev/null 2>&1"
    ),
    "tmp-fill": (
        "timeout -s KILL 12 bash -c 'dd if=/dev/zero of=/tmp/fill bs=1M; sleep 60' >/dev/null 2>&1; rm -f /tmp/fill"
    ),
}


def usage(client: Any, name: str) -> tuple[int, int]:
    """The session's process count and memory use, as the engine reports them."""
    stats = client.api.stats(name, stream=False, one_shot=True)
    pids = (stats.get("pids_stats") or {}).get("current") or 0
    return int(pids), int((stats.get("memory_stats") or {}).get("usage") or 0)


def exhaust(
    engine: Engine, env: dict[str, str], name: str, user: str, session_id: str
) -> dict[str, tuple[bool, str]]:
    """Each attack in turn, from the agent; while it runs, the host, the proxy and the broker are timed."""
    client = engine.client
    proxy = client.containers.get(f"{name}-proxy")
    sockets_file = Path(env["CONTAINAI_HOME"]) / "state" / "sessions" / session_id / "broker.sockets"
    broker = ""
    if sockets_file.exists():
        broker = str(Path(sockets_file.read_text().strip()) / "broker" / "broker.sock")

    def ask_broker() -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(ANSWER_SECONDS * 2)
            s.connect(broker)
            s.sendall(b'{"op": "ping"}\n')
            s.recv(4096)

    # Squid itself, asked from the host in the proxy's network namespace (no engine call in the way,
    # whose own latency is not the proxy's): a request it must refuse, and its 403.
    proxy_pid = str(proxy.attrs["State"]["Pid"])

    def ask_proxy() -> None:
        request = "exec 3<>/dev/tcp/127.0.0.1/3128; printf 'GET http://x.invalid/ HTTP/1.0\\r\\n\\r\\n' >&3; head -c 12 <&3"
        answer = subprocess.run(
            ["nsenter", "-t", proxy_pid, "-n", "bash", "-c", request],
            capture_output=True,
            text=True,
            timeout=ANSWER_SECONDS * 2,
            check=False,
        )
        assert answer.stdout.startswith("HTTP/1.1 403"), answer

    verdicts: dict[str, tuple[bool, str]] = {}
    with host_http() as url:
        import urllib.request

        def ask_host() -> None:
            with urllib.request.urlopen(url, timeout=ANSWER_SECONDS * 2) as answer:  # noqa: S310  # loopback
                answer.read()

        for attack, command in ATTACKS.items():
            # A quiet session first: the last attack's processes gone (an engine may reap them late,
            # and an exec into a session with no process slot left fails).
            deadline = time.monotonic() + 30
            while usage(client, name)[0] > 50 and time.monotonic() < deadline:
                time.sleep(1)
            runtime = engine.runtime()
            try:
                runtime.exec(name, ExecSpec(("bash", "-c", command), user=user, detach=True))
            finally:
                runtime.close()
            time.sleep(4)  # the attack at its height
            # The highest of three samples: a balloon is refilled right after each OOM kill.
            pids, memory = (
                max(sample) for sample in zip(*(usage(client, name) for _ in range(3)), strict=True)
            )
            times = {"host": timed(ask_host), "proxy": timed(ask_proxy)}
            if broker:
                times["broker"] = timed(ask_broker)
            slow = {k: v for k, v in times.items() if v >= ANSWER_SECONDS}
            detail = ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
            agent = client.containers.get(name)
            if "broker" not in times:
                detail += f"; no broker socket found in {sockets_file}"
            time.sleep(9)  # the attack ends (its timeout), and the next starts on a quiet session
            # The attack must be seen at work, or the timings prove nothing.
            at_work = {
                "fork-bomb": pids >= 200,
                "memory-balloon": memory >= 2**28,
                "tmp-fill": memory >= 2**29,
            }
            held = not slow and "broker" in times and agent.status == "running" and at_work[attack]
            detail += f"; at its height the session had {pids} processes and {memory >> 20} MiB"
            detail += f"; the session's container is {agent.status}"
            verdicts[attack] = (held, detail)
    return verdicts
