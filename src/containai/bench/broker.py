"""The broker: capability redemptions per second and their latency, in process over its Unix socket,
against a bare Unix-socket echo server (the floor of one connect, one line each way)."""

from __future__ import annotations

import base64
import json
import os
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from containai.bench.context import BenchRun
from containai.bench.figures import Figure, Rule, Target
from containai.bench.stats import Summary, alternate, percentile
from containai.broker.broker import Broker
from containai.broker.server import BrokerServer
from containai.secrets.value import Secret

SESSION, CONTAINER = "bench-session", "bench-container"


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        self.wfile.write(b'{"ok":true}\n')


class EchoServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def exchange(path: Path, line: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(line)
        answer: dict[str, object] = json.loads(sock.makefile("rb").readline())
        return answer


def serve(server: socketserver.BaseServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


def redemptions(run: BenchRun) -> list[Figure]:
    count = 200 if run.quick else 2000
    base = Path(tempfile.mkdtemp(prefix="bench-broker-", dir=run.workdir))
    broker = Broker(lookup=lambda name: Secret(f"value-of-{name}"), audit_path=base / "audit.jsonl")
    server = BrokerServer(base / "stub" / "broker.sock", broker, allowed_uids=[os.getuid()])
    echo = EchoServer(str(base / "echo.sock"), _Echo)
    threads = [serve(server), serve(echo)]
    latencies: dict[str, list[float]] = {"redeem": [], "echo": []}
    try:

        def block(kind: str) -> Callable[[], float]:
            def measure() -> float:
                if kind == "redeem":
                    lines = [redeem_line(broker) for _ in range(count)]  # issuing is not timed
                    path = server.path
                else:
                    lines = [b'{"op":"ping"}\n'] * count
                    path = base / "echo.sock"
                start = time.perf_counter()
                for line in lines:
                    began = time.perf_counter()
                    answer = exchange(path, line)
                    latencies[kind].append(time.perf_counter() - began)
                    if answer.get("ok") is not True:
                        raise RuntimeError(f"the broker refused a redemption: {answer}")
                return count / (time.perf_counter() - start)

            return measure

        echo_rates, redeem_rates = alternate([block("echo"), block("redeem")], run.repeat)
    finally:
        for srv in (server, echo):
            srv.shutdown()
            srv.server_close()
        for thread in threads:
            thread.join(timeout=10)
    p99 = percentile([s * 1000 for s in latencies["redeem"]], 99)
    echo_p99 = percentile([s * 1000 for s in latencies["echo"]], 99)
    p50 = percentile([s * 1000 for s in latencies["redeem"]], 50)
    echo_p50 = percentile([s * 1000 for s in latencies["echo"]], 50)
    total = len(latencies["redeem"])
    return [
        Figure(
            "broker.rate",
            f"broker redemptions per second, one client, {count} a block",
            "/s",
            Summary.of(redeem_rates),
            Summary.of(echo_rates),
            "a bare Unix-socket echo server",
        ),
        Figure(
            "broker.p50",
            f"broker redemption latency p50 ({total} redemptions)",
            "ms",
            Summary.single(p50),
            Summary.single(echo_p50),
            "echo p50",
        ),
        Figure(
            "broker.p99",
            f"broker redemption latency p99 ({total} redemptions)",
            "ms",
            Summary.single(p99),
            Summary.single(echo_p99),
            "echo p99",
            Target(Rule.AT_MOST, 5.0, "< 5 ms"),
        ),
    ]


def redeem_line(broker: Broker) -> bytes:
    issued = broker.issue(SESSION, CONTAINER, "bench", ["TOKEN"], ttl=300)
    request = {
        "op": "redeem",
        "token": issued.token,
        "session": SESSION,
        "container": CONTAINER,
        "bundle": base64.b64encode(issued.bundle).decode(),
    }
    return json.dumps(request).encode() + b"\n"
