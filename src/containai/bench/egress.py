"""Egress through a session's proxy against the same traffic direct, both served by a local upstream
container on a fake internet the run creates (an --internal network: nothing leaves the machine).

The same client program runs in both places: a big download, then many small requests, each on a
new connection. Through the proxy it runs in the agent's container of a squid session (its traffic
goes agent -> relay -> squid -> upstream); direct, in a container on the fake internet itself.
"""

from __future__ import annotations

import json
from typing import Any

from containai.bench.context import CHANNEL, BenchError, BenchRun, run_checked
from containai.bench.fakenet import FakeInternet
from containai.bench.figures import Figure, Rule, Target
from containai.bench.stats import Summary, alternate, percentile
from containai.images.catalog import image_tag

CLIENT = r"""
import json, sys, time, urllib.request
base, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
opener = urllib.request.build_opener()  # honours http_proxy, which a squid session sets
start = time.perf_counter()
got = 0
with opener.open(f"{base}/bytes/{size}", timeout=300) as reply:
    while chunk := reply.read(1 << 20):
        got += len(chunk)
download = time.perf_counter() - start
latencies = []
for i in range(count):
    began = time.perf_counter()
    with opener.open(f"{base}/small/{i}", timeout=30) as reply:
        reply.read()
    latencies.append(time.perf_counter() - began)
print("BENCH " + json.dumps({"bytes": got, "download": download, "latencies": latencies}))
"""
HOST = "allowed.test"


def parse_client(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("BENCH "):
            data: dict[str, Any] = json.loads(line[len("BENCH ") :])
            return data
    raise BenchError(f"the egress client printed no result:\n{output[-2000:]}")


def throughput(run: BenchRun) -> list[Figure]:
    size = 20_000_000 if run.quick else 200_000_000
    count = 100 if run.quick else 1000
    argv = ["python3", "-c", CLIENT, f"http://{HOST}", str(size), str(count)]
    repo = run.repo(10, "root")
    with FakeInternet(
        run.client, image=image_tag("base", CHANNEL), labels=run.labels, run_id=run.run_id
    ) as net:
        env = run.env | {
            "CONTAINAI_EGRESS_LAB": f"network={net.network},dns={net.dns_ip},allow-range={net.subnet}"
        }

        def direct() -> dict[str, Any]:
            code, output, _ = net.run_client(argv, timeout=600)
            if code != 0:
                raise BenchError(f"the direct egress client exited {code}:\n{output[-2000:]}")
            return parse_client(output)

        def proxied() -> dict[str, Any]:
            session = run.cli(
                "containai", "run", "shell", repo, "--channel", CHANNEL, "--no-push",
                "--network-proxy", "squid", "--allow-domain", HOST, "--", *argv,
            )  # fmt: skip
            return parse_client(run_checked(session, env=env, timeout=900, what="squid session").stdout)

        results: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy": []}

        def keep(kind: str, measure: Any) -> Any:
            def wrapped() -> float:
                data = measure()
                if data["bytes"] != size:
                    raise BenchError(f"{kind}: downloaded {data['bytes']} bytes of {size}")
                results[kind].append(data)
                return float(data["download"])

            return wrapped

        alternate([keep("direct", direct), keep("proxy", proxied)], run.repeat)

    def rate(kind: str) -> Summary:
        return Summary.of([size / r["download"] / 1e6 for r in results[kind]])

    def latency(kind: str, q: float) -> Summary:
        return Summary.of([percentile(r["latencies"], q) * 1000 for r in results[kind]])

    mb = size // 1_000_000
    return [
        Figure(
            "egress.download",
            f"a {mb} MB download through the session's proxy (squid session, throughput)",
            "MB/s",
            rate("proxy"),
            rate("direct"),
            "the same download direct between containers",
            Target(Rule.RATIO_AT_LEAST, 0.8, ">= 80% of direct"),
        ),
        Figure(
            "egress.small.p50",
            f"{count} small requests through the proxy, latency p50",
            "ms",
            latency("proxy", 50),
            latency("direct", 50),
            "the same direct",
        ),
        Figure(
            "egress.small.p99",
            f"{count} small requests through the proxy, latency p99",
            "ms",
            latency("proxy", 99),
            latency("direct", 99),
            "the same direct",
        ),
    ]
