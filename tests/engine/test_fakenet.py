"""The fake internet works and its logs are honest: the "switched off" controls for the egress tests.

Each test shows that a packet which does reach a fake-internet server is logged with the sender's
address, so an egress test that sees no log line has seen no leak, not a deaf canary.
"""

from __future__ import annotations

import base64
import json
import shlex
import time
from typing import Any

import docker
import pytest

from .conftest import CHANNEL, LABELS, RUN_ID, Engine, run
from .fakenet import FakeInternet, FakeNetError, wait_until

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

BASE = f"containai-base:{CHANNEL}"

# Sends TCP and UDP probes given as proto:host:port:payload; prints one JSON result per probe.
PROBE = r"""
import json, socket, sys
for spec in sys.argv[1:]:
    proto, host, port, payload = spec.split(":", 3)
    try:
        if proto == "tcp":
            with socket.create_connection((host, int(port)), timeout=2) as s:
                s.sendall(payload.encode())
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(payload.encode(), (host, int(port)))
        print(json.dumps({"spec": spec, "ok": True}))
    except OSError as e:
        print(json.dumps({"spec": spec, "ok": False, "error": repr(e)}))
"""

# DNS A queries over UDP or TCP (argv: server, transport, names...); prints rcode and answers per name.
DIG = r"""
import json, socket, struct, sys
server, transport = sys.argv[1:3]
for name in sys.argv[3:]:
    q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    if transport == "tcp":
        with socket.create_connection((server, 53), timeout=3) as s:
            s.sendall(struct.pack("!H", len(q)) + q)
            r = s.recv(4096)[2:]
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(q, (server, 53))
            r = s.recv(4096)
    qid, flags, _, ancount, _, _ = struct.unpack_from("!HHHHHH", r)
    answers = [socket.inet_ntoa(r[i - 4 : i]) for i in range(len(r), len(q), -16)]  # 16-byte A records
    print(json.dumps({"id": qid, "rcode": flags & 0xF, "aa": bool(flags & 0x0400), "answers": sorted(answers)}))
"""


def probe(net: FakeInternet, *specs: str, **kwargs: Any) -> tuple[str, list[dict[str, Any]]]:
    code, output, address = net.run_client(["python3", "-c", PROBE, *specs], **kwargs)
    assert code == 0, output
    return address, [json.loads(line) for line in output.splitlines()]


def test_canary_logs_tcp_and_udp_with_the_senders_address(fake_internet: FakeInternet) -> None:
    net, marker = fake_internet, fake_internet.nonce()
    canary = net.ip("canary")
    address, results = probe(net, f"tcp:{canary}:22:SSH-{marker}", f"udp:{canary}:123:NTP-{marker}")
    assert all(r["ok"] for r in results), results

    hits = wait_until(net.canary_hits, lambda hits: len(hits) >= 2)
    assert sorted((h["proto"], h["port"], h["peer"]) for h in hits) == [
        ("tcp", 22, address),
        ("udp", 123, address),
    ]
    payloads = {h["port"]: base64.b64decode(h["first_bytes"]).decode() for h in hits}
    assert payloads == {22: f"SSH-{marker}", 123: f"NTP-{marker}"}


def test_canary_listens_on_every_port_of_the_catalogue(fake_internet: FakeInternet) -> None:
    net = fake_internet
    canary = net.ip("canary")
    tcp, udp = (22, 25, 80, 443, 853, 3306, 8443), (53, 123, 443)
    specs = [f"tcp:{canary}:{p}:t{p}" for p in tcp] + [f"udp:{canary}:{p}:u{p}" for p in udp]
    address, results = probe(net, *specs)
    assert all(r["ok"] for r in results), results

    hits = wait_until(net.canary_hits, lambda hits: len(hits) >= len(specs))
    assert {h["peer"] for h in hits} == {address}
    assert sorted((h["proto"], h["port"]) for h in hits) == sorted(
        [("tcp", p) for p in tcp] + [("udp", p) for p in udp]
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dns_server_answers_the_zone_and_logs_every_query(
    fake_internet: FakeInternet, transport: str
) -> None:
    net, marker = fake_internet, fake_internet.nonce()
    exfil = f"n{marker}.exfil.test"
    names = [exfil, "allowed.test", f"{marker}.rebind.test"]
    code, output, address = net.run_client(["python3", "-c", DIG, net.dns_ip, transport, *names])
    assert code == 0, output
    results = [json.loads(line) for line in output.splitlines()]

    assert results[0]["rcode"] == 3  # NXDOMAIN, yet the name has been seen
    assert (results[1]["rcode"], results[1]["answers"]) == (0, [net.ip("allowed")])
    assert results[2]["answers"] == ["127.0.0.1"]  # a rebinding answer
    queries = wait_until(net.dns_queries, lambda qs: len(qs) >= 3)
    assert [(q["qname"], q["qtype"], q["proto"]) for q in queries] == [
        (exfil, "A", transport),
        ("allowed.test", "A", transport),
        (f"{marker}.rebind.test", "A", transport),
    ]
    assert {q["peer"] for q in queries} == {address}


def test_a_name_looked_up_through_the_resolver_reaches_the_dns_log(fake_internet: FakeInternet) -> None:
    net, marker = fake_internet, fake_internet.nonce()
    exfil = f"n{marker}.exfil.test"
    code, output, _ = net.run_client(["getent", "hosts", exfil])
    assert code == 2, output  # not found: the zone does not have it

    queries = wait_until(net.dns_queries, lambda qs: any(q["qname"] == exfil for q in qs))
    assert exfil in {q["qname"] for q in queries}


def test_http_servers_answer_by_address_and_by_alias_and_log_it(fake_internet: FakeInternet) -> None:
    net, marker = fake_internet, fake_internet.nonce()
    script = (
        f"curl -sS --max-time 5 -H 'Host: allowed.test' http://{net.ip('allowed')}/by-ip/{marker}"
        f" && curl -sS --max-time 5 -d payload-{marker} http://allowed.test/by-alias/{marker}"
        f" && curl -sS --max-time 5 http://evil.test/{marker}"
    )
    code, output, address = net.run_client(["bash", "-c", script])
    assert code == 0, output
    assert output.splitlines() == ["allowed-ok", "allowed-ok", "evil-ok"]

    requests = wait_until(lambda: net.http_requests("allowed"), lambda rs: len(rs) >= 2)
    assert [(r["method"], r["path"], r["host_header"], r["body_bytes"], r["peer"]) for r in requests] == [
        ("GET", f"/by-ip/{marker}", "allowed.test", 0, address),
        ("POST", f"/by-alias/{marker}", "allowed.test", len(f"payload-{marker}"), address),
    ]
    assert [(r["path"], r["host_header"]) for r in net.http_requests("evil")] == [(f"/{marker}", "evil.test")]


def test_non_http_traffic_to_a_web_server_is_logged_too(fake_internet: FakeInternet) -> None:
    net = fake_internet
    # No TLS server answers on 443, so curl fails; the ClientHello with its SNI is what counts.
    script = (
        f"curl -sS --max-time 5 --resolve front.test:443:{net.ip('evil')} https://front.test/;"
        f" python3 -c {shlex.quote(PROBE)} tcp:{net.ip('evil')}:80:not-http"
    )
    code, output, address = net.run_client(["bash", "-c", script])
    assert code == 0, output
    assert '"ok": true' in output, output

    connections = wait_until(lambda: net.tls_connections("evil"), bool)
    assert [(c["port"], c["peer"], c["sni"]) for c in connections] == [(443, address, "front.test")]
    # a connection that never makes a valid request still leaves a record, with the error it got
    requests = wait_until(lambda: net.http_requests("evil"), bool)
    assert [(r["peer"], r["method"], r["error"]) for r in requests] == [(address, None, 400)]
    assert net.tls_connections("allowed") == []
    assert net.http_requests("allowed") == []


def test_a_container_off_the_network_reaches_nothing_and_is_not_logged(
    engine: Engine, fake_internet: FakeInternet
) -> None:
    net = fake_internet
    canary = net.ip("canary")
    code, output = run(
        engine.client,
        BASE,
        ["python3", "-c", PROBE, f"tcp:{canary}:22:x", f"tcp:{canary}:80:x", f"udp:{canary}:123:x"],
        entrypoint=[],
        network_mode="none",
        cap_drop=["ALL"],
    )
    assert code == 0, output
    results = [json.loads(line) for line in output.splitlines()]
    assert [r["ok"] for r in results] == [False, False, False], results  # no route at all, even for UDP
    time.sleep(1.5)  # a canary logs a TCP accept once the first bytes arrived or 1 s passed
    assert net.canary_hits() == []


def test_another_bridge_network_cannot_route_into_the_fake_internet(
    engine: Engine, fake_internet: FakeInternet
) -> None:
    # Engine quirk the egress tests must know: traffic forwarded by the host into an --internal
    # network is dropped, so only containers attached to the fake internet (the proxy) can leak to it.
    net = fake_internet
    other = engine.client.networks.create(
        f"containai-fakeinet-{RUN_ID}-other", driver="bridge", labels=LABELS
    )
    try:
        code, output = run(
            engine.client,
            BASE,
            ["python3", "-c", PROBE, f"tcp:{net.ip('canary')}:80:x"],
            entrypoint=[],
            network=other.name,
            cap_drop=["ALL"],
        )
    finally:
        other.remove()
    assert code == 0, output
    if engine.kind == "podman":
        # Podman 4.3's CNI bridges do forward into an --internal network from another one: on Podman,
        # that the agent has no network at all is what keeps it off the fake internet.
        assert json.loads(output)["ok"] is True
        return
    assert json.loads(output)["ok"] is False
    time.sleep(1.5)
    assert net.canary_hits() == []


def test_a_dead_server_raises_instead_of_reporting_silence(fake_internet: FakeInternet) -> None:
    fake_internet._containers["canary"].kill()
    with pytest.raises(FakeNetError, match="'canary' is exited"):
        fake_internet.canary_hits()


def test_second_instance_takes_another_subnet_and_close_removes_everything(
    engine: Engine, fake_internet: FakeInternet
) -> None:
    second = FakeInternet(engine.client, image=BASE, labels=LABELS, run_id=RUN_ID).start()
    try:
        assert second.subnet != fake_internet.subnet
        assert engine.client.networks.get(second.network).attrs["Internal"] is True
        address, results = probe(second, f"tcp:{second.ip('canary')}:443:x")
        assert results[0]["ok"], results
        assert [h["peer"] for h in wait_until(second.canary_hits, bool)] == [address]
        assert fake_internet.canary_hits() == []  # the two internets are apart
    finally:
        second.close()

    selector = {"name": second.prefix}
    assert engine.client.containers.list(all=True, filters=selector) == []
    assert engine.client.volumes.list(filters=selector) == []
    with pytest.raises(docker.errors.NotFound):
        engine.client.networks.get(second.network)
