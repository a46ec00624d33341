"""A "fake internet" made of local containers, for egress tests (threat catalogue §1, §D).

An ``--internal`` network on the benchmarking range 198.18.<k>.0/24 plays the internet, so even a
broken egress control delivers its packet to a local canary, never off the box:

    .10  canary   TCP 22,25,80,443,853,3306,8443 and UDP 53,123,443; logs every accept and datagram
    .20  allowed  HTTP on 80 ("allowed-ok"), a TLS canary on 443 that logs the SNI; alias allowed.test
    .30  evil     the same, "evil-ok"; alias evil.test
    .40  modelapi a mock of the Anthropic Messages and OpenAI Responses APIs, and of a streamable-HTTP
                  MCP server at /mcp, on 80; alias api.mock.test;
                  logs every request with its credential headers (fakenet_server.py "modelapi")
    .53  dns      authoritative for the zone below (UDP and TCP 53); logs every query
    .64-.127      static addresses for the clients started with ``run_client``
    .128-.254     left to the engine's IPAM (a proxy sidecar attached by a test lands here; on
                  Podman, whose IPAM skips the addresses in use, any free one)

The servers run ``fakenet_server.py`` from the base image, as its unprivileged user, with no
capabilities and a read-only root. Reads of a server's log first check that its container still runs:
a dead canary must raise, not report "nothing seen".

Any client on this network must resolve names through ``dns_ip``: the engine's embedded resolver
otherwise forwards unknown names to the host's upstream servers (CVE-2024-29018 on Engine < 26).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import docker

from containai.runtime.engine import engine_kind

SERVER_SCRIPT = Path(__file__).with_name("fakenet_server.py")
SCRIPT_IN_CONTAINER = "/opt/fakenet/fakenet_server.py"
CANARY_TCP = (22, 25, 80, 443, 853, 3306, 8443)
CANARY_UDP = (53, 123, 443)
HOSTS = {"canary": 10, "allowed": 20, "evil": 30, "modelapi": 40, "dns": 53}
ALIASES = {
    "canary": ["canary.test"],
    "allowed": ["allowed.test"],
    "evil": ["evil.test"],
    "modelapi": ["api.mock.test"],
    "dns": ["dns.test"],
}
CLIENT_HOSTS = range(64, 128)
# name -> address, or a host name above (replaced by its address). A leading "*." is a wildcard.
DEFAULT_ZONE = {
    "allowed.test": "allowed",
    "evil.test": "evil",
    "canary.test": "canary",
    "dns.test": "dns",
    "api.mock.test": "modelapi",
    "*.rebind.test": "127.0.0.1",
    "metadata.test": "169.254.169.254",
}
READY_TIMEOUT = 30.0
# Explicit limits within the host's: Podman's defaults (nofile 1048576) can exceed them, and then the
# container does not start. Docker takes them as well.
ULIMITS = [
    docker.types.Ulimit(name="nofile", soft=4096, hard=4096),
    docker.types.Ulimit(name="nproc", soft=4096, hard=4096),
]
_instances = itertools.count(1)
T = TypeVar("T")


class FakeNetError(AssertionError):
    """The fake internet could not start, or one of its servers is no longer running."""


def nonce() -> str:
    """A fresh marker for hostnames (``n<nonce>.exfil.test``), payloads and canary secrets."""
    return uuid.uuid4().hex


def wait_until(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 5.0) -> T:
    """Poll ``read`` until ``done`` holds or ``timeout`` passes; return the last value either way."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


class FakeInternet:
    """Start with ``start()`` (or ``with FakeInternet(...) as net``); ``close()`` removes everything."""

    def __init__(
        self,
        client: Any,
        *,
        image: str,
        labels: Mapping[str, str],
        run_id: str,
        zone: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.image = image
        self.labels = dict(labels)
        self.prefix = f"containai-fakeinet-{run_id}-{next(_instances)}"
        self.network = self.prefix
        self.subnet = ""
        self.zone = {**DEFAULT_ZONE, **(zone or {})}
        self._containers: dict[str, Any] = {}
        self._network: Any = None
        self._volume: Any = None
        self._clients = itertools.cycle(CLIENT_HOSTS)
        self.podman = engine_kind(client.version()) == "podman"

    # --- addresses ---------------------------------------------------------------------------

    def ip(self, name: str) -> str:
        """The address of a server: "canary", "allowed", "evil", "modelapi" or "dns"."""
        base = self.subnet.rsplit(".", 1)[0]  # "198.18.k.0/24" -> "198.18.k"
        return f"{base}.{HOSTS[name]}"

    @property
    def dns_ip(self) -> str:
        return self.ip("dns")

    nonce = staticmethod(nonce)

    # --- logs --------------------------------------------------------------------------------

    def canary_hits(self) -> list[dict[str, Any]]:
        """Every TCP accept and UDP datagram at the canary: time, proto, port, peer, first_bytes (b64)."""
        return self._read("canary", "canary.jsonl")

    def dns_queries(self) -> list[dict[str, Any]]:
        """Every query the DNS server received: time, proto, peer, qname (as sent), qtype."""
        return self._read("dns", "dns.jsonl")

    def http_requests(self, name: str) -> list[dict[str, Any]]:
        """Every HTTP request to "allowed" or "evil": time, peer, method, path, host_header, body_bytes."""
        return self._read(name, f"{name}.jsonl")

    def tls_connections(self, name: str) -> list[dict[str, Any]]:
        """Every TCP connection to port 443 of "allowed" or "evil": like a canary hit, plus the SNI."""
        return self._read(name, f"{name}-tls.jsonl")

    def model_requests(self) -> list[dict[str, Any]]:
        """Every request to the model API mock: time, peer, method, path, host_header, x_api_key,
        authorization, user_agent, model, stream, body_bytes, status, reply (None off the model routes)."""
        return self._read("modelapi", "modelapi.jsonl")

    def _read(self, name: str, filename: str) -> list[dict[str, Any]]:
        container = self._running(name)
        code, output = container.exec_run(["cat", f"/log/{filename}"], user="1000:1000")
        if code != 0:
            raise FakeNetError(f"cannot read /log/{filename} in {container.name}: {output!r}")
        text = output.decode("utf-8")
        complete = text[: text.rfind("\n") + 1]  # a line being written right now is read next time
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def _running(self, name: str) -> Any:
        container = self._containers[name]
        container.reload()
        if container.status != "running":
            logs = container.logs().decode("utf-8", "replace")
            raise FakeNetError(f"fake internet server {name!r} is {container.status}; its output:\n{logs}")
        return container

    # --- clients -----------------------------------------------------------------------------

    def run_client(self, command: list[str], *, timeout: float = 120, **kwargs: Any) -> tuple[int, str, str]:
        """Run a labelled container on the fake internet to completion: (exit code, output, its address).

        It gets a static address (so a test knows whom to look for in the logs) and ``dns_ip`` as
        its resolver. Extra keyword arguments go to ``containers.create``.
        """
        address = f"{self.subnet.rsplit('.', 1)[0]}.{next(self._clients)}"
        endpoint = self.client.api.create_endpoint_config(ipv4_address=address)
        kwargs.setdefault("entrypoint", [])
        kwargs.setdefault("dns", [self.dns_ip])
        kwargs.setdefault("ulimits", ULIMITS)
        container = self.client.containers.create(
            self.image,
            command,
            labels=self.labels,
            network=self.network,
            networking_config={self.network: endpoint},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            **kwargs,
        )
        try:
            container.start()
            status = container.wait(timeout=timeout)
            output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
            return int(status["StatusCode"]), output, address
        finally:
            container.remove(force=True)

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FakeInternet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> FakeInternet:
        try:
            self._create_network()
            self._volume = self.client.volumes.create(
                name=f"{self.prefix}-log",
                labels=self.labels,
                # tmpfs, owned by the image user: the servers write without root and nothing lands on disk
                # (nr_blocks, in 4 KiB pages: Podman would read size= as an XFS quota)
                driver_opts={
                    "type": "tmpfs",
                    "device": "tmpfs",
                    "o": "nr_blocks=8192,uid=1000,gid=1000,mode=0755",
                },
            )
            for name, command in self._commands().items():
                self._start_server(name, command)
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove the containers, the volume and the network; keep going past failures, then raise."""
        errors: list[str] = []
        for container in self._containers.values():
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                errors.append(f"container {container.name}: {error}")
        self._containers.clear()
        for kind, thing in (("volume", self._volume), ("network", self._network)):
            if thing is None:
                continue
            try:
                thing.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                errors.append(f"{kind} {thing.name}: {error}")
        self._volume = self._network = None
        if errors:
            raise FakeNetError("fake internet teardown left things behind:\n" + "\n".join(errors))

    def _create_network(self) -> None:
        for k in range(256):
            subnet = f"198.18.{k}.0/24"
            # Docker hands out addresses from the upper half only; Podman's CNI IPAM would then refuse
            # the servers' static addresses in the lower half (it skips those in use instead).
            iprange = None if self.podman else f"198.18.{k}.128/25"
            pool = docker.types.IPAMPool(subnet=subnet, gateway=f"198.18.{k}.1", iprange=iprange)
            try:
                self._network = self.client.networks.create(
                    self.network,
                    driver="bridge",
                    internal=True,
                    labels=self.labels,
                    ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                )
            except docker.errors.APIError as error:
                # Docker says the pools overlap; Podman that the subnet "is already used".
                if "overlap" in str(error).lower() or "already used" in str(error).lower():
                    continue  # another fake internet (or something else) has this /24
                raise
            self.subnet = subnet
            return
        raise FakeNetError("no free /24 in 198.18.0.0/16 for the fake internet")

    def _commands(self) -> dict[str, list[str]]:
        hosts = {name: self.ip(name) for name in HOSTS}
        zone = [f"--zone={name}={hosts.get(value, value)}" for name, value in self.zone.items()]
        ports = ",".join(map(str, CANARY_TCP)), ",".join(map(str, CANARY_UDP))
        return {
            "canary": ["canary", "--tcp", ports[0], "--udp", ports[1], "--log", "/log/canary.jsonl"],
            "allowed": ["http", "--port", "80", "--name", "allowed", "--log", "/log/allowed.jsonl"],
            "evil": ["http", "--port", "80", "--name", "evil", "--log", "/log/evil.jsonl"],
            "modelapi": ["modelapi", "--port", "80", "--log", "/log/modelapi.jsonl"],
            "dns": ["dns", *zone, "--log", "/log/dns.jsonl"],
        }

    def _start_server(self, name: str, command: list[str]) -> None:
        endpoint = self.client.api.create_endpoint_config(ipv4_address=self.ip(name), aliases=ALIASES[name])
        self._containers[name] = self.client.containers.run(
            self.image,
            ["python3", SCRIPT_IN_CONTAINER, *command],
            entrypoint=[],
            name=f"{self.prefix}-{name}",
            hostname=name,
            detach=True,
            labels=self.labels,
            network=self.network,
            networking_config={self.network: endpoint},
            user="1000:1000",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            mem_limit="128m",
            pids_limit=256,
            ulimits=ULIMITS,
            # Ports below 1024 without a capability: Docker's default, which Podman does not set.
            sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
            volumes={
                str(SERVER_SCRIPT): {"bind": SCRIPT_IN_CONTAINER, "mode": "ro"},
                self._volume.name: {"bind": "/log", "mode": "rw"},
            },
        )

    def _wait_ready(self) -> None:
        """Each server writes <log>.ready once all its sockets listen; wait for every server's file."""
        deadline = time.monotonic() + READY_TIMEOUT
        pending = set(HOSTS)
        while pending:
            for name in sorted(pending):
                container = self._running(name)
                code, output = container.exec_run(["cat", f"/log/{name}.jsonl.ready"], user="1000:1000")
                if code == 0 and output.strip():
                    ready = json.loads(output)
                    if not any(s["family"] == 4 for s in ready):
                        raise FakeNetError(f"{name} listens on no IPv4 socket: {ready}")
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise FakeNetError(
                    f"fake internet servers not ready after {READY_TIMEOUT}s: {sorted(pending)}"
                )
            if pending:
                time.sleep(0.1)
