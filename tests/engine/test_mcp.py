"""MCP servers through the stub: the server gets the host's secret, the agent gets tool results only.

A random canary is stored on the host and named by a user MCP server's env. The server (a small stdio
MCP server committed to the test repository) answers a tool call with the sha256 of what it received.
The agent, through its CLI's rendered config or the stub's front door, sees the hash; the canary, in
any encoding, is nowhere the agent can read, in no `docker inspect`, log, or audit.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shlex
import subprocess
import tarfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from containai.broker.session import admin

from .conftest import CHANNEL, LABELS, RUN_ID, Engine
from .test_egress import lab_env, results  # noqa: F401  # lab_env is a fixture used below
from .test_gateway import egress_audit, forms, store_secret
from .test_sessions import SESSION_LABEL, containai, git, launcher, make_repo, program

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

CANARY_SERVER = textwrap.dedent(
    '''
    """A stdio MCP server with one tool: the sha256 of the CANARY variable it was started with."""
    import hashlib, json, os, sys

    for line in sys.stdin:
        message = json.loads(line)
        if "id" not in message:
            continue
        if message["method"] == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "canary", "version": "1"},
            }
        elif message["method"] == "tools/list":
            result = {"tools": [{"name": "report", "description": "hash of the secret",
                                 "inputSchema": {"type": "object", "properties": {}}}]}
        elif message["method"] == "tools/call":
            digest = hashlib.sha256(os.environ.get("CANARY", "").encode()).hexdigest()
            result = {"content": [{"type": "text", "text": f"sha256={digest} uid={os.getuid()}"}]}
        else:
            result = {}
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)
    '''
)

# Runs as the agent: talk MCP through the stub, then try what an attacker would, then dump
# everything readable (searched on the host, so the probe itself never holds the canary).
PROBE_CLIENT = textwrap.dedent(
    """
    import errno, json, os, socket, subprocess
    stub = subprocess.Popen(["mcp-stub", "connect", "canary"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    def ask(message):
        stub.stdin.write((json.dumps(message) + "\\n").encode()); stub.stdin.flush()
        return json.loads(stub.stdout.readline()) if "id" in message else None
    ask({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
         "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}})
    ask({"jsonrpc": "2.0", "method": "notifications/initialized"})
    answer = ask({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "report", "arguments": {}}})
    print("R tool", answer["result"]["content"][0]["text"])
    # While the server runs: the stub's and the server's memory and environment, as the agent.
    tried = {}
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        if "\\nUid:\\t65500" not in status:
            continue
        for what in ("environ", "mem", "fd/0"):
            try:
                open(f"/proc/{pid}/{what}", "rb").read(1)
                tried[f"{pid}/{what}"] = "read"
            except OSError as exc:
                tried[f"{pid}/{what}"] = errno.errorcode[exc.errno]
    tried["self/environ"] = "read" if open("/proc/self/environ", "rb").read(1) else "empty"
    print("R procs", json.dumps(tried))
    stub.stdin.close(); stub.wait()
    for op in ("redeem", "refresh"):
        s = socket.socket(socket.AF_UNIX)
        s.connect("/run/containai/broker/broker.sock")
        s.sendall(json.dumps({"op": op, "token": "x", "session": "s", "container": "c", "bundle": "",
                              "consumer": "canary"}).encode() + b"\\n")
        print("R broker-" + op, s.recv(4096).decode().strip())
    """
)

PROBE = (
    f"python3 -c {shlex.quote(PROBE_CLIENT)}; "
    'echo "R claude $(timeout 60 claude mcp list 2>&1 | base64 -w0)"; '
    'echo "R stubdir $(ls /run/containai/mcp/canary 2>&1 | base64 -w0)"; '
    "mkdir -p /tmp/seen && for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; done > /tmp/seen/proc; "
    'echo "R dump $(tar -cz /tmp/seen /run /home /etc /workspace 2>/dev/null | base64 -w0)"'
)


# The server's code is in its arguments (not a secret), not in the workspace: the agent can change
# anything there, and a server with secrets must not run code the agent wrote.
COMMAND_SERVER = (
    f'[mcp_servers.canary]\ncommand = "python3"\nargs = ["-I", "-c", {json.dumps(CANARY_SERVER)}]\n'
)


def canary_server_with_a_host_secret(env: dict[str, str]) -> str:
    """A random canary stored on the host, and the user's canary server, given it as CANARY."""
    canary = f"mcp-canary-{uuid.uuid4().hex}"
    store_secret(env, "MCP_CANARY", canary)
    user_config(env, COMMAND_SERVER + 'env = { CANARY = "${MCP_CANARY}" }\n')
    return canary


def user_config(env: dict[str, str], text: str) -> None:
    config = Path(env["CONTAINAI_HOME"]) / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)


def test_an_mcp_server_uses_a_host_secret_the_agent_never_sees(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    engine: Engine,
) -> None:
    canary = canary_server_with_a_host_secret(lab_env)
    repo = make_repo(tmp_path)
    args = ["run", "claude", str(repo), "--channel", CHANNEL, "--no-push", "--json"]
    process = subprocess.Popen(
        [program(lab_env, "containai"), *args, "--", "bash", "-c", PROBE],
        env=lab_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    inspected: list[str] = []
    filters = {"label": [f"ai.containai.repo={repo}"]}
    for _ in range(300):
        found = engine.client.containers.list(filters=filters)
        agent = [c for c in found if c.labels.get("ai.containai.role") == "agent"]
        if agent and agent[0].exec_run(["test", "-S", "/run/containai/mcp/canary/front.sock"]).exit_code == 0:
            inspected = [json.dumps(c.attrs) for c in found] + [
                c.logs().decode(errors="replace") for c in found
            ]
            break
        subprocess.run(["sleep", "0.1"], check=True)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    found_results = results(stdout)

    # The server got the real value (its hash proves it) and ran under its own uid, not the agent's.
    digest = hashlib.sha256(canary.encode()).hexdigest()
    assert found_results.get("tool") == f"sha256={digest} uid=65500", stderr[-3000:]
    # The real Claude Code CLI reads the rendered config and reaches the server through the stub.
    claude = base64.b64decode(found_results["claude"]).decode()
    assert "canary" in claude and "mcp-stub connect canary" in claude, claude
    assert "Connected" in claude, claude
    # The agent's uid is refused by the broker's socket, whatever it asks.
    for op in ("redeem", "refresh"):
        assert json.loads(found_results.get(f"broker-{op}", "{}")).get("error") == "peer-refused", (
            stdout[-2000:],
            stderr[-3000:],
        )
    assert "Permission denied" in base64.b64decode(found_results["stubdir"]).decode()
    # The stub and the server (uid 65500, the session's first server's) keep their memory, environment and descriptors from the
    # agent, which reads its own (the control: the probe would have seen them).
    tried = json.loads(found_results["procs"])
    assert tried.pop("self/environ") == "read"
    assert len(tried) >= 6, tried  # the stub and the server, three files each
    assert set(tried.values()) <= {"EACCES", "EPERM"}, tried

    # The root filesystem is read-only: what could hold the canary is the tmpfs and volume mounts, all
    # under /tmp, /run, /home and /workspace, and the processes' environments and command lines.
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(found_results["dump"])), mode="r:gz") as archive:
        seen = [archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()]  # type: ignore[union-attr]
    assert any(b"HOME=/home/agent" in data for data in seen), "the dump missed the environment"
    assert any(b"mcp-stub" in data for data in seen), "the dump missed the stub's command line"
    assert inspected, "the session's containers were never seen running"
    for data in seen:
        for form in forms(canary):
            assert form.encode() not in data
    for text in [*inspected, stdout, stderr]:
        for form in forms(canary):
            assert form not in text

    # The broker's audit: issued, redeemed, the agent's attempts refused with its uid, all revoked at
    # the end; fingerprints only.
    summary = json.loads(stdout[stdout.index("\n{\n") :])
    logs = Path(lab_env["CONTAINAI_HOME"]) / "state" / "session-logs"
    audit_text = (logs / f"{summary['session']}-{summary['session_id']}.broker.jsonl").read_text()
    audit = [json.loads(line) for line in audit_text.splitlines()]
    events = [(r["event"], r["outcome"]) for r in audit]
    assert ("issue", "allow") in events and ("redeem", "allow") in events
    refused = [r for r in audit if r["outcome"] == "deny" and r.get("reason") == "PeerRefused"]
    assert len(refused) == 2 and all(r["peer"]["uid"] != 65500 for r in refused), audit_text
    assert events[-2:] == [("revoke", "allow"), ("close", "info")]
    # Nor in the proxy's audit kept on the host, or the history of the images the session ran.
    egress = egress_audit(lab_env, summary["session"])
    histories = [
        json.dumps(engine.client.api.history(f"containai-{part}:{CHANNEL}")) for part in ("claude", "proxy")
    ]
    for text in [audit_text, egress, *histories]:
        for form in forms(canary):
            assert form not in text
    # The session's broker is gone with it, and so is everything the session created.
    brokers = subprocess.run(["pgrep", "-f", summary["session_id"]], capture_output=True, text=True)
    assert brokers.stdout.strip() == ""
    assert not engine.client.containers.list(
        all=True, filters={"label": f"{SESSION_LABEL}={summary['session_id']}"}
    )


# As the agent, in a running session: one tool call through the stub, its text printed.
TOOL_CALL = textwrap.dedent(
    """
    import json, subprocess
    stub = subprocess.Popen(["mcp-stub", "connect", "canary"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for message in (
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
         "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "report", "arguments": {}}},
    ):
        stub.stdin.write((json.dumps(message) + "\\n").encode()); stub.stdin.flush()
        answer = json.loads(stub.stdout.readline())
    print(answer["result"]["content"][0]["text"])
    """
)


def test_a_persistent_sessions_capabilities_outlive_the_launcher_and_die_with_its_container(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    engine: Engine,
) -> None:
    canary = canary_server_with_a_host_secret(lab_env)
    repo = make_repo(tmp_path)
    launched = subprocess.run(
        [program(lab_env, "launch-agent"), "shell", str(repo), "--channel", CHANNEL],
        env=lab_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert launched.returncode == 0, launched.stderr
    (agent,) = engine.client.containers.list(
        filters={"label": [f"ai.containai.repo={repo}", "ai.containai.role=agent"]}
    )
    session_id = agent.labels[SESSION_LABEL]
    pid = int(
        (Path(lab_env["CONTAINAI_HOME"]) / "state" / "sessions" / session_id / "broker.pid").read_text()
    )
    user = agent.attrs["Config"]["User"]
    digest = hashlib.sha256(canary.encode()).hexdigest()

    # The launcher has exited; the session's broker still serves, twice (a refreshed capability).
    for _ in range(2):
        run = agent.exec_run(["python3", "-c", TOOL_CALL], user=user)
        assert run.output.decode().strip() == f"sha256={digest} uid=65500", run.output.decode()
    assert Path(f"/proc/{pid}").exists()

    # The container dies outside ContainAI's control: the broker sees it, revokes, and exits.
    agent.kill()
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        subprocess.run(["sleep", "0.2"], check=True)
    logs = Path(lab_env["CONTAINAI_HOME"]) / "state" / "session-logs"
    broker_log = "".join(p.read_text() for p in logs.glob(f"*-{session_id}.broker.log"))
    assert not Path(f"/proc/{pid}").exists(), f"the broker outlived its session's container:\n{broker_log}"
    (audit_file,) = logs.glob(f"*-{session_id}.broker.jsonl")
    audit = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert [r["event"] for r in audit if r["outcome"] == "allow"].count("redeem") == 2
    revokes = [r for r in audit if r["event"] == "revoke"]
    assert revokes[0].get("container") == agent.name
    assert revokes[-1].get("session") == session_id


def test_a_repository_server_runs_only_once_approved_and_again_only_after_a_change_is_approved(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path)
    declared = COMMAND_SERVER
    (repo / ".containai").mkdir()
    (repo / ".containai" / "config.toml").write_text(declared)
    git(repo, "add", ".containai")
    git(repo, "commit", "-q", "-m", "ask for an MCP server")

    def tool_text() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(
                    program(lab_env, "containai"),
                    "run",
                    "shell",
                    str(repo),
                    "--channel",
                    CHANNEL,
                    "--no-push",
                ),
                *("--prompt", f"python3 -c {shlex.quote(TOOL_CALL)} || echo no-stub"),
            ],
            env=lab_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    pending = tool_text()
    assert "no-stub" in pending.stdout and "uid=65500" not in pending.stdout
    assert "not started until you approve" in pending.stderr, pending.stderr

    approve = subprocess.run(
        [program(lab_env, "containai"), "mcp", "approve", str(repo), "--yes"],
        env=lab_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert approve.returncode == 0, approve.stderr
    assert "python3" in approve.stdout and "hash of the secret" in approve.stdout  # shown before pinning
    approved = tool_text()
    assert "uid=65500" in approved.stdout, approved.stderr[-2000:]

    # A changed definition is pending again, whatever it changed.
    (repo / ".containai" / "config.toml").write_text(declared + 'env = { EXTRA = "1" }\n')
    git(repo, "commit", "-q", "-am", "change the server")
    changed = tool_text()
    assert "no-stub" in changed.stdout and "changed" in changed.stderr, changed.stderr


def test_a_url_server_gets_the_bearer_token_from_the_stub_through_the_proxy(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
) -> None:
    canary = f"mcp-bearer-canary-{uuid.uuid4().hex}"
    store_secret(lab_env, "REMOTE_MCP_TOKEN", canary)
    user_config(
        lab_env,
        '[mcp_servers.canary]\nurl = "http://api.mock.test/mcp"\nbearer_token = "${REMOTE_MCP_TOKEN}"\n',
    )
    # Nothing else allows api.mock.test: the URL server's host joins the allowlist by itself.
    result = subprocess.run(
        [
            program(lab_env, "containai"),
            "run",
            "shell",
            str(make_repo(tmp_path)),
            "--channel",
            CHANNEL,
            "--no-push",
            "--json",
            "--prompt",
            f"python3 -c {shlex.quote(TOOL_CALL)}",
        ],
        env=lab_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    digest = hashlib.sha256(canary.encode()).hexdigest()
    assert f"sha256={digest}" in result.stdout, result.stdout + result.stderr[-2000:]
    for form in forms(canary):
        assert form not in result.stdout + result.stderr
    calls = [r for r in fake_internet.model_requests() if r["path"] == "/mcp"]
    assert {"initialize", "tools/call"} <= {r["mcp_method"] for r in calls}, calls
    assert calls and all(r["authorization"] == f"Bearer {canary}" for r in calls), calls
    # The stub kept the server's session, and the proxy saw (and audited) the way out.
    assert any(r["mcp_session"] == "mock-mcp-session-1" for r in calls if r["mcp_method"] == "tools/call")
    summary = json.loads(result.stdout[result.stdout.index("\n{\n") :])
    egress = egress_audit(lab_env, summary["session"])
    assert "api.mock.test" in egress
    for form in forms(canary):
        assert form not in egress


@pytest.mark.parametrize("agent", ["codex", "copilot"])
def test_codex_and_copilot_read_the_rendered_config_and_find_the_server(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    agent: str,
) -> None:
    """The real CLIs find the server where ContainAI wrote it, pointing at the stub."""
    user_config(lab_env, COMMAND_SERVER)
    result = subprocess.run(
        [
            *(program(lab_env, "containai"), "run", agent, str(make_repo(tmp_path)), "--channel", CHANNEL),
            *("--no-push", "--", "timeout", "60", agent, "mcp", "get", "canary"),
        ],
        env=lab_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "canary" in result.stdout and "/usr/local/bin/mcp-stub" in result.stdout, result.stdout
    assert "python3" not in result.stdout  # the agent sees the stub, not the real command


# A real npm package whose bin is a stdio MCP server in Node, installed in a test image so that `npx`
# finds it offline, as it would find `@modelcontextprotocol/server-github` after its first download.
NPX_PACKAGE = {
    "package.json": json.dumps(
        {"name": "canary-mcp", "version": "1.0.0", "bin": {"canary-mcp": "server.js"}}
    ),
    "server.js": textwrap.dedent(
        """\
        #!/usr/bin/env node
        const crypto = require("crypto");
        const rl = require("readline").createInterface({ input: process.stdin });
        rl.on("line", (line) => {
          const m = JSON.parse(line);
          if (m.id === undefined) return;
          let result = {};
          if (m.method === "initialize") {
            result = { protocolVersion: m.params.protocolVersion, capabilities: { tools: {} },
                       serverInfo: { name: "canary-npx", version: "1" } };
          } else if (m.method === "tools/call") {
            const digest = crypto.createHash("sha256").update(process.env.CANARY || "").digest("hex");
            result = { content: [{ type: "text", text: `sha256=${digest} uid=${process.getuid()}` }] };
          }
          process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id: m.id, result }) + "\\n");
        });
        """
    ),
    "Dockerfile": (
        f"FROM containai-claude:{CHANNEL}\nUSER root\nCOPY . /opt/canary-mcp\n"
        "RUN chmod 755 /opt/canary-mcp/server.js && npm install -g --offline --no-audit --no-fund /opt/canary-mcp\n"
    ),
}

# As the agent: plant an npm project configuration in every folder above the stub's home it can write
# (code that would run inside the server, with its secret), then use the server through the stub.
PLANT = textwrap.dedent(
    """\
    evil='const fs=require("fs"); const f="/tmp/leak-"+process.pid;
    fs.writeFileSync(f, "LEAK:"+(process.env.CANARY||"")); fs.chmodSync(f, 0o644);'
    for d in /run/containai/mcp/canary/home /run/containai/mcp/canary /run/containai/mcp /run/containai /run /; do
      if printf '{"name":"planted"}' > "$d/package.json" 2>/dev/null; then
        printf 'node-options=--require=%s/evil.js\\n' "$d" > "$d/.npmrc"
        printf '%s\\n' "$evil" > "$d/evil.js"
        echo "R planted-$d yes"
      fi
    done
    echo "R tool $(python3 -c "$TOOL_CALL")"
    echo "R leak $(cat /tmp/leak-* 2>/dev/null | base64 -w0)"
    """
)


def test_a_server_started_through_npx_reads_no_configuration_the_agent_planted(
    env: dict[str, str],
    tmp_path: Path,
    engine: Engine,
) -> None:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, text in NPX_PACKAGE.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    context.seek(0)
    image = f"containai-test-npx:{RUN_ID}"
    engine.client.images.build(fileobj=context, custom_context=True, tag=image, labels=LABELS, rm=True)
    agents = Path(env["CONTAINAI_HOME"]) / "config" / "agents"
    agents.mkdir(parents=True)
    (agents / "npxprobe.toml").write_text(
        f'name = "npxprobe"\ndescription = "the shell, in an image with an npm MCP server"\nimage = "{image}"\n'
        'command = ["bash", "-l"]\nprompt_command = ["bash", "-lc", "{prompt}"]\n'
    )
    canary = f"npx-canary-{uuid.uuid4().hex}"
    store_secret(env, "MCP_CANARY", canary)
    user_config(
        env,
        '[mcp_servers.canary]\ncommand = "npx"\nargs = ["--offline", "canary-mcp"]\n'
        'env = { CANARY = "${MCP_CANARY}" }\n',
    )
    repo = make_repo(tmp_path)
    script = f"TOOL_CALL={shlex.quote(TOOL_CALL)}\n{PLANT}"
    result = containai(
        env, "run", "npxprobe", str(repo), "--no-push", "--network-proxy", "restricted", "--prompt", script
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = results(result.stdout)
    # The server ran, through npx, under its own uid, with the host's secret.
    digest = hashlib.sha256(canary.encode()).hexdigest()
    assert found.get("tool") == f"sha256={digest} uid=65500", result.stdout + result.stderr[-3000:]
    # No folder above the server's home is the agent's to write, so nothing was planted, and no code of
    # the agent's ran in the server: no leak file, and the canary nowhere in what the agent saw.
    assert [k for k in found if k.startswith("planted-")] == []
    assert base64.b64decode(found.get("leak", "")) == b""
    for form in forms(canary):
        assert form not in result.stdout and form not in result.stderr


# A server that runs whatever its caller asks (a hostile one, or a buggy one a prompt injection can
# drive): tool "run" runs a shell command with the server's uid and environment; "report" answers as
# the canary server does.
RUNNER_SERVER = CANARY_SERVER.replace(
    '    elif message["method"] == "tools/call":\n',
    '    elif message["method"] == "tools/call" and message["params"]["name"] == "run":\n'
    "        import subprocess\n"
    '        ran = subprocess.run(message["params"]["arguments"]["cmd"], shell=True, capture_output=True, text=True)\n'
    '        result = {"content": [{"type": "text", "text": ran.stdout + ran.stderr}]}\n'
    '    elif message["method"] == "tools/call":\n',
)

# Run in server A's process, with A's uid: what A would try against server B (B's uid in argv[1],
# then a capability of B's, and the session and container it is bound to).
AGAINST_B = textwrap.dedent(
    """
    import errno, json, os, socket, sys
    b_uid, token, bundle, session, container = int(sys.argv[1]), *sys.argv[2:6]
    tried = {}
    def attempt(label, action):
        try:
            data = action()
            tried[label] = "read" + ("-canary" if b"canary-b-" in data else "")
        except OSError as exc:
            tried[label] = errno.errorcode[exc.errno]
    pids = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            if f"\\nUid:\\t{b_uid}\\t" in open(f"/proc/{pid}/status").read():
                pids.append(pid)
        except OSError:
            pass
    tried["b-processes"] = len(pids)
    for pid in pids:
        attempt(f"environ-{pid}", lambda: open(f"/proc/{pid}/environ", "rb").read())
    for path in ("/run/containai/mcp/b", "/run/containai/mcp/b/caps"):
        attempt(f"ls {path}", lambda: "\\n".join(os.listdir(path)).encode())
    for path in ("/run/containai/mcp/b/caps/b.json", "/run/containai/mcp/b/servers.json",
                 "/run/containai/mcp/b/home/.npmrc"):
        attempt(path, lambda: open(path, "rb").read())
    def broker(request):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect("/run/containai/broker/broker.sock")
            s.sendall(json.dumps(request).encode() + b"\\n")
            return json.loads(s.makefile().readline())
    ids = {"session": session, "container": container}
    answer = broker({"op": "redeem", "token": token, "bundle": bundle, **ids})
    tried["redeem-b"] = answer.get("error") or ("canary" if "canary-b-" in json.dumps(answer) else "ok")
    tried["refresh-b"] = broker({"op": "refresh", "consumer": "b", **ids}).get("error") or "ok"
    print(json.dumps(tried))
    """
)

# As the agent. MCP_CLIENT, then HOLD_B in the background: B's server runs (B's report is written
# to /tmp/b-said) until /tmp/b-release appears. Then A_RUNS: A's own secret's hash, A running
# AGAINST_B, and B again on a fresh connection.
MCP_CLIENT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    def connect(name):
        stub = subprocess.Popen(["mcp-stub", "connect", name], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        call(stub, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "probe", "version": "1"}})
        return stub
    def call(stub, method, params):
        stub.stdin.write((json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}) + "\\n").encode())
        stub.stdin.flush()
        return json.loads(stub.stdout.readline())["result"]
    def tool(stub, name, **arguments):
        return call(stub, "tools/call", {"name": name, "arguments": arguments})["content"][0]["text"]
    def close(stub):
        stub.stdin.close(); stub.wait()
    """
)
HOLD_B = MCP_CLIENT + textwrap.dedent(
    """
    b = connect("b")
    open("/tmp/b-said.new", "w").write(tool(b, "report"))
    os.rename("/tmp/b-said.new", "/tmp/b-said")
    for _ in range(600):
        if os.path.exists("/tmp/b-release"):
            break
        time.sleep(0.2)
    close(b)
    """
)
A_RUNS = MCP_CLIENT + textwrap.dedent(
    """
    b_said = open("/tmp/b-said").read()
    print("R b", b_said)
    a = connect("a")
    print("R a", tool(a, "report"))
    command = " ".join(["python3", "-I", "-c", sys.argv[1], b_said.rpartition("uid=")[2], *sys.argv[2:]])
    print("R against-b", tool(a, "run", cmd=command).strip())
    close(a)
    open("/tmp/b-release", "w").close()
    again = connect("b")
    print("R b-again", tool(again, "report"))
    close(again)
    """
)


def test_an_mcp_server_that_runs_what_it_is_told_reaches_no_other_servers_secret(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    engine: Engine,
) -> None:
    canaries = {name: f"mcp-canary-{name}-{uuid.uuid4().hex}" for name in ("a", "b")}
    config = ""
    for name, canary in canaries.items():
        store_secret(lab_env, f"MCP_CANARY_{name.upper()}", canary)
        config += (
            f'[mcp_servers.{name}]\ncommand = "python3"\nargs = ["-I", "-c", {json.dumps(RUNNER_SERVER)}]\n'
            f'env = {{ CANARY = "${{MCP_CANARY_{name.upper()}}}" }}\n'
        )
    user_config(lab_env, config)
    repo = make_repo(tmp_path)
    launched = launcher(lab_env, "launch-agent", "shell", str(repo), "--channel", CHANNEL)
    assert launched.returncode == 0, launched.stderr
    name = launched.stdout.strip()
    try:
        agent = engine.client.containers.get(name)
        user = agent.attrs["Config"]["User"]
        session = agent.labels[SESSION_LABEL]
        agent.exec_run(["python3", "-c", HOLD_B], user=user, detach=True)
        for _ in range(300):
            if agent.exec_run(["test", "-s", "/tmp/b-said"], user=user).exit_code == 0:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        # Now, while B's server runs: a live capability of B's, as the launcher issues them, as if A
        # had got hold of it (B's own stub has the other live one, in its capability file).
        state = Path(lab_env["CONTAINAI_HOME"]) / "state" / "sessions" / session
        b_cap = admin(
            Path((state / "broker.sockets").read_text().strip()) / "admin" / "admin.sock",
            {
                "op": "issue",
                "session": session,
                "container": name,
                "consumer": "b",
                "secrets": ["MCP_CANARY_B"],
                "ttl": 60,
            },
        )
        args = [shlex.quote(AGAINST_B), b_cap["token"], b_cap["bundle"], session, name]
        run = agent.exec_run(["python3", "-c", A_RUNS, *args], user=user, workdir="/workspace")
        output = run.output.decode("utf-8", "replace")
        assert run.exit_code == 0, output
        found = results(output)
        digest = {n: hashlib.sha256(c.encode()).hexdigest() for n, c in canaries.items()}
        a_uid, b_uid = (int(found[n].rpartition("uid=")[2]) for n in ("a", "b"))
        # Each server has its own secret, under its own uid.
        assert found["a"] == f"sha256={digest['a']} uid={a_uid}"
        assert found["b"] == f"sha256={digest['b']} uid={b_uid}"
        assert {a_uid, b_uid} <= {65500, 65501}
        tried = json.loads(found["against-b"])
        # B's stub and server were running, and A could read neither's environment.
        assert tried.pop("b-processes") >= 2, tried
        environs = {k: tried.pop(k) for k in list(tried) if k.startswith("environ-")}
        assert environs and set(environs.values()) <= {"EACCES", "EPERM"}, tried | environs
        # Nor list or read B's folder, capability, configuration or home.
        files = {k: tried.pop(k) for k in list(tried) if k.startswith(("/", "ls "))}
        assert len(files) == 5 and set(files.values()) == {"EACCES"}, files
        # The broker refuses A's uid a live capability of B's, and a fresh one.
        assert tried == {"redeem-b": "wrong-consumer", "refresh-b": "wrong-consumer"}, tried
        # B still works, and A's attempt did not use B's capabilities up.
        assert found["b-again"] == f"sha256={digest['b']} uid={b_uid}"
        assert a_uid != b_uid
        assert canaries["b"] not in output and canaries["a"] not in output

        logs = Path(lab_env["CONTAINAI_HOME"]) / "state" / "session-logs"
        (audit_file,) = logs.glob(f"*-{session}.broker.jsonl")
        audit = [json.loads(line) for line in audit_file.read_text().splitlines()]
        wrong = [r for r in audit if r.get("reason") == "wrong-consumer"]
        assert sorted(r["event"] for r in wrong) == ["redeem", "refresh"], wrong
        assert all(r["peer"]["uid"] == a_uid and r["presented_by"] == "a" for r in wrong), wrong
    finally:
        removed = launcher(lab_env, "remove-agent", name, "--no-push", "--yes")
        assert removed.returncode == 0, removed.stderr
