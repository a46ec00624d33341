"""The host-side secret broker: tokens, sealing, single use, revocation, audit, and its Unix socket.

Maps to the threat catalogue's C group: #20 replay (incl. 50 concurrent redemptions), #21 expiry on a
controlled clock, #22 forgery (hypothesis over token bytes), #23 session/peer binding, #24 the agent's
uid at the socket, #25 bundle swap and tampering, #26 revocation and broker restart, #27 fail-closed
audit with a hash chain. Socket tests use real sockets, threads and child processes under other uids,
so they need root (as the test machine runs); they skip otherwise.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from containai.broker import audit as audit_module
from containai.broker import sealing, tokens
from containai.broker.audit import verify
from containai.broker.broker import Broker, Peer
from containai.broker.server import ADMIN_OPS, STUB_OPS, BrokerServer
from containai.broker.tokens import Capability
from containai.errors import (
    AuditUnavailable,
    BrokerError,
    BundleRefused,
    CapabilityRefused,
    ContainAIError,
    SecretUnavailable,
    TokenExpired,
    TokenForged,
    TokenMalformed,
    TokenNotLive,
    WrongContainer,
    WrongSession,
)
from containai.secrets.value import Secret

T0 = 1_800_000_000.0
STUB_UID = 65534
AGENT_UID = 1000
STUB_GID = 4242
HOST_PEER = Peer(pid=1, uid=0, gid=0)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class RecordingRandom:
    """os.urandom that remembers every draw, so tests can look for keys where they must not be."""

    draws: list[bytes] = field(default_factory=list)

    def __call__(self, n: int) -> bytes:
        raw = os.urandom(n)
        self.draws.append(raw)
        return raw

    def keys(self) -> list[bytes]:
        return [d for d in self.draws if len(d) == 32]


@pytest.fixture
def canary() -> str:
    # Unique per test, so a hit anywhere on disk can only come from this test's broker.
    return f"sk-canary-{uuid.uuid4().hex}"


@pytest.fixture
def store(canary: str) -> dict[str, str]:
    return {"GITHUB_TOKEN": canary, "OTHER_KEY": f"other-{uuid.uuid4().hex}"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rand() -> RecordingRandom:
    return RecordingRandom()


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "broker.jsonl"


@pytest.fixture
def make_broker(
    store: dict[str, str], clock: FakeClock, rand: RecordingRandom, audit_path: Path
) -> Callable[..., Broker]:
    audit_path.parent.mkdir(exist_ok=True)

    def make(**overrides: object) -> Broker:
        kwargs: dict[str, object] = {
            "lookup": store.get,
            "audit_path": audit_path,
            "clock": clock,
            "randbytes": rand,
        }
        kwargs.update(overrides)
        return Broker(**kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker()


def audit_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def events(path: Path, event: str, outcome: str) -> list[dict[str, object]]:
    return [e for e in audit_lines(path) if e["event"] == event and e["outcome"] == outcome]


def refusals_audited(path: Path, event: str) -> int:
    """Refusals of ``event`` in the audit: each on its own line, or counted in a ``suppressed`` line."""
    lines = audit_lines(path)
    counted = [e["suppressed"] for e in lines if e["event"] == "suppressed" and e["refused"] == event]
    return len(events(path, event, "deny")) + sum(int(str(n)) for n in counted)


def redeem(
    broker: Broker, issued: tuple[str, bytes], *, session: str = "s1", container: str = "c1"
) -> dict[str, str]:
    token, bundle = issued
    secrets = broker.redeem(token, session=session, container=container, bundle=bundle, peer=HOST_PEER)
    return {name: secret.reveal() for name, secret in secrets.items()}


# -- round trip, single use, concurrency ------------------------------------------------------------


def test_issue_then_redeem_returns_the_secrets_once(
    broker: Broker, store: dict[str, str], audit_path: Path
) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    secrets = broker.redeem(issued.token, session="s1", container="c1", bundle=issued.bundle, peer=HOST_PEER)

    assert {k: v.reveal() for k, v in secrets.items()} == {"GITHUB_TOKEN": store["GITHUB_TOKEN"]}
    assert repr(secrets["GITHUB_TOKEN"]) == "Secret('***')"
    assert store["GITHUB_TOKEN"] not in repr(secrets)
    assert broker.live_count() == 0
    assert [e["event"] for e in audit_lines(audit_path)] == ["issue", "redeem"]


def test_second_redemption_is_refused_and_audited_with_the_token_fingerprint(
    broker: Broker, audit_path: Path
) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    redeem(broker, issued)

    with pytest.raises(TokenNotLive):
        redeem(broker, issued)

    (allowed,) = events(audit_path, "redeem", "allow")
    (denied,) = events(audit_path, "redeem", "deny")
    assert denied["reason"] == "not-live"
    assert denied["token"] == allowed["token"] == broker.audit.fingerprint(issued.token)


def test_fifty_concurrent_redemptions_of_one_token_yield_exactly_one_success(
    broker: Broker, audit_path: Path
) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN", "OTHER_KEY"], ttl=60)
    barrier = threading.Barrier(50)
    results: list[object] = []
    results_lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        try:
            outcome: object = redeem(broker, issued)
        except ContainAIError as exc:
            outcome = exc
        with results_lock:
            results.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    successes = [r for r in results if isinstance(r, dict)]
    refusals = [r for r in results if isinstance(r, TokenNotLive)]
    assert (len(results), len(successes), len(refusals)) == (50, 1, 49)
    assert len(events(audit_path, "redeem", "allow")) == 1
    broker.close()  # the refusals over the audit's rate are counted in a summary line
    assert refusals_audited(audit_path, "redeem") == 49


# -- expiry and TTL ----------------------------------------------------------------------------------


def test_a_token_is_refused_from_its_expiry_on(broker: Broker, clock: FakeClock, audit_path: Path) -> None:
    early = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    late = broker.issue("s1", "c1", "other", ["GITHUB_TOKEN"], ttl=60)

    clock.now = T0 + 59
    assert redeem(broker, early)
    clock.now = T0 + 60
    with pytest.raises(TokenExpired):
        redeem(broker, late)

    assert events(audit_path, "redeem", "deny")[-1]["reason"] == "expired"


@pytest.mark.parametrize("ttl", [0, -5, 301, 10**9, True])
def test_ttls_outside_the_maximum_are_refused_not_clamped(broker: Broker, ttl: int, audit_path: Path) -> None:
    with pytest.raises(BrokerError, match="ttl"):
        broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=ttl)

    assert broker.live_count() == 0
    assert events(audit_path, "issue", "deny")


def test_a_missing_secret_is_refused_by_name(broker: Broker, audit_path: Path) -> None:
    with pytest.raises(SecretUnavailable, match="NOT_STORED"):
        broker.issue("s1", "c1", "github", ["GITHUB_TOKEN", "NOT_STORED"], ttl=60)

    assert broker.live_count() == 0
    assert events(audit_path, "issue", "deny")[0]["reason"] == "SecretUnavailable"


# -- binding: session, container, bundle ------------------------------------------------------------


def test_tokens_are_refused_from_another_session_or_container(broker: Broker, audit_path: Path) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    with pytest.raises(WrongSession):
        redeem(broker, issued, session="s2", container="c1")
    with pytest.raises(WrongContainer):
        redeem(broker, issued, session="s1", container="c2")

    reasons = [e["reason"] for e in events(audit_path, "redeem", "deny")]
    assert reasons == ["wrong-session", "wrong-container"]
    # A misdirected attempt does not burn the capability for its rightful holder.
    assert redeem(broker, issued)


def test_a_bundle_swapped_from_another_capability_does_not_open(broker: Broker, audit_path: Path) -> None:
    mine = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    theirs = broker.issue("s2", "c2", "github", ["GITHUB_TOKEN"], ttl=60)

    with pytest.raises(BundleRefused):
        redeem(broker, (mine.token, theirs.bundle))

    assert events(audit_path, "redeem", "deny")[-1]["reason"] == "BundleRefused"
    # Spent: a tampering attempt must not be retryable.
    with pytest.raises(TokenNotLive):
        redeem(broker, mine)


@pytest.mark.parametrize("position", [0, 4, 5, 16, -1])
def test_a_changed_byte_in_a_bundle_fails_authentication(broker: Broker, position: int) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    tampered = bytearray(issued.bundle)
    tampered[position] ^= 0x01

    with pytest.raises(BundleRefused):
        redeem(broker, (issued.token, bytes(tampered)))


# -- forgery ---------------------------------------------------------------------------------------

FUZZ_KEY = b"k" * 32
FUZZ_CAP = Capability(
    id="0" * 32,
    session="s1",
    container="c1",
    consumer="github",
    names=("GITHUB_TOKEN",),
    issued_at=int(T0),
    expires_at=int(T0) + 60,
)
FUZZ_TOKEN = tokens.issue(FUZZ_CAP, key=FUZZ_KEY).encode("ascii")


def _verify_fuzz(token: str | bytes) -> Capability:
    return tokens.verify(token, key=FUZZ_KEY, now=T0, session="s1", container="c1")


def test_the_fuzz_token_is_valid_unmutated() -> None:
    assert _verify_fuzz(FUZZ_TOKEN) == FUZZ_CAP


def mutate(token: bytes, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    out = bytearray(token)
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "insert", "delete", "splice"]))
    i = draw(st.integers(0, len(out) - 1))
    if kind == "flip":
        out[i] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        del out[i:]
    elif kind == "extend":
        out += draw(st.binary(min_size=1, max_size=64))
    elif kind == "insert":
        out[i:i] = draw(st.binary(min_size=1, max_size=8))
    elif kind == "delete":
        del out[i : i + draw(st.integers(1, 8))]
    else:
        out[i : i + 4] = draw(st.binary(min_size=0, max_size=8))
    return bytes(out)


@st.composite
def mutated_tokens(draw: st.DrawFn) -> bytes:
    return mutate(FUZZ_TOKEN, draw)


@settings(max_examples=1500, deadline=None)
@given(mutated_tokens())
def test_any_mutation_of_a_token_is_refused_with_a_typed_error(token: bytes) -> None:
    assume(token != FUZZ_TOKEN)
    # Only the typed refusals may escape: no success, no ValueError/KeyError/UnicodeError.
    with pytest.raises(CapabilityRefused):
        _verify_fuzz(token)
    with pytest.raises(CapabilityRefused):
        _verify_fuzz(token.decode("latin-1"))


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.text(max_size=600)))
def test_arbitrary_input_is_refused_with_a_typed_error(token: str | bytes) -> None:
    with pytest.raises((TokenMalformed, TokenForged)):
        _verify_fuzz(token)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_broker_refuses_mutated_tokens_and_keeps_the_real_one_live(
    broker: Broker, data: st.DataObject
) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    mutated = mutate(issued.token.encode("ascii"), data.draw)
    assume(mutated != issued.token.encode("ascii"))

    with pytest.raises(CapabilityRefused):
        broker.redeem(mutated, session="s1", container="c1", bundle=issued.bundle, peer=HOST_PEER)
    assert redeem(broker, issued)


def _reencode(token: str, change: Callable[[dict[str, object]], None]) -> str:
    prefix, payload, tag = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    change(data)
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return f"{prefix}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{tag}"


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(sid="s2"),
        lambda d: d.update(cid="c2"),
        lambda d: d.update(exp=d["exp"] + 3600),
        lambda d: d.update(names=["GITHUB_TOKEN", "OTHER_KEY"]),
        lambda d: d.update(sub="other"),
        lambda d: d.pop("exp"),
        lambda d: d.update(extra="caveat"),
    ],
    ids=["session", "container", "expiry", "scope", "consumer", "drop-caveat", "add-caveat"],
)
def test_changing_any_field_under_the_original_mac_is_forgery(
    change: Callable[[dict[str, object]], None],
) -> None:
    with pytest.raises(TokenForged):
        _verify_fuzz(_reencode(FUZZ_TOKEN.decode(), change))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "cai1",
        "cai1..",
        FUZZ_TOKEN.decode().rsplit(".", 1)[0] + ".",  # "alg: none": no tag at all
        FUZZ_TOKEN.decode().replace("cai1.", "cai2.", 1),
        FUZZ_TOKEN.decode() + "=",
        FUZZ_TOKEN.decode() + ".x",
        "cai1." + "A" * 5000,
    ],
    ids=[
        "empty",
        "prefix-only",
        "empty-parts",
        "no-tag",
        "other-version",
        "padding",
        "extra-part",
        "oversized",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(TokenMalformed):
        _verify_fuzz(token)


def test_a_token_macd_with_another_key_is_forged(broker: Broker) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    prefix, payload, _ = issued.token.split(".")
    import hmac as hmac_module

    other_tag = hmac_module.new(os.urandom(32), f"{prefix}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{prefix}.{payload}.{base64.urlsafe_b64encode(other_tag).rstrip(b'=').decode()}"

    with pytest.raises(TokenForged):
        redeem(broker, (forged, issued.bundle))
    with pytest.raises(TokenForged):
        _verify_fuzz(tokens.issue(FUZZ_CAP, key=b"x" * 32))


def test_token_tags_are_compared_in_constant_time_only() -> None:
    source = Path(tokens.__file__).read_text()
    assert "hmac.compare_digest(tag," in source
    assert "tag ==" not in source
    assert "== tag" not in source


def test_tokens_from_an_earlier_broker_run_are_refused(make_broker: Callable[..., Broker]) -> None:
    before = make_broker()
    issued = before.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    after = make_broker()  # a restart: new in-memory keys, same audit file

    with pytest.raises(TokenForged):
        redeem(after, issued)


# -- what the token and bundle carry ---------------------------------------------------------------


def test_neither_bundle_nor_token_holds_a_secret_or_a_key(
    broker: Broker, rand: RecordingRandom, store: dict[str, str]
) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN", "OTHER_KEY"], ttl=60)
    keys = rand.keys()
    # token key, audit key, and this bundle's data key (ids are 16 bytes, nonces 12)
    assert len(keys) == 3
    _, payload, tag = issued.token.split(".")
    token_bytes = (
        issued.token.encode()
        + base64.urlsafe_b64decode(payload + "==")
        + base64.urlsafe_b64decode(tag + "==")
    )

    for blob in (issued.bundle, token_bytes):
        for value in store.values():
            assert value.encode() not in blob
        for key in keys:
            assert key not in blob
            assert key.hex().encode() not in blob
    assert b"GITHUB_TOKEN" not in issued.bundle  # even the names are sealed
    assert redeem(broker, issued) == store


def test_sealing_uses_a_fresh_nonce_each_time(rand: RecordingRandom) -> None:
    key = sealing.new_data_key(rand)
    one = sealing.seal({"GITHUB_TOKEN": "v"}, key=key, capability=FUZZ_CAP, randbytes=rand)
    two = sealing.seal({"GITHUB_TOKEN": "v"}, key=key, capability=FUZZ_CAP, randbytes=rand)
    assert one != two
    assert sealing.open_bundle(one, key=key, capability=FUZZ_CAP) == {"GITHUB_TOKEN": "v"}


# -- audit -----------------------------------------------------------------------------------------


def test_the_audit_has_keyed_fingerprints_and_no_values_anywhere_on_disk(
    broker: Broker, canary: str, audit_path: Path, tmp_path: Path
) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    redeem(broker, issued)
    with pytest.raises(TokenNotLive):
        redeem(broker, issued)
    broker.revoke_session("s1")

    issue_line = events(audit_path, "issue", "allow")[0]
    redeem_line = events(audit_path, "redeem", "allow")[0]
    expected = broker.audit.fingerprint(canary)
    assert issue_line["fingerprints"] == redeem_line["fingerprints"] == {"GITHUB_TOKEN": expected}
    assert expected.startswith("hmac-sha256:")
    bare_hashes = [hashlib.sha256(canary.encode()).hexdigest(), hashlib.sha1(canary.encode()).hexdigest()]  # noqa: S324
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert canary.encode() not in data, path
            assert base64.b64encode(canary.encode()) not in data, path
            for bare in bare_hashes:
                assert bare[:32].encode() not in data, path
    assert stat.S_IMODE(audit_path.stat().st_mode) == 0o600


def test_the_audit_is_a_chain_that_shows_a_removed_line(broker: Broker, audit_path: Path) -> None:
    redeem(broker, broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60))
    broker.revoke_session("s1")
    lines = audit_path.read_bytes().splitlines(keepends=True)

    assert verify(audit_path, finished=False).lines == 3
    audit_path.write_bytes(lines[0] + lines[2])
    found = verify(audit_path, finished=False)
    assert (found.broken, found.line) == ("deleted", 2)


def test_a_restarted_broker_continues_the_chain(make_broker: Callable[..., Broker], audit_path: Path) -> None:
    first = make_broker()
    first.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    first.close()
    make_broker().issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    found = verify(audit_path, finished=False)
    assert (found.ok, found.lines) == (True, 3), found


def _break_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(audit_module, "_write_all", no_space)


def test_issue_is_refused_when_the_audit_cannot_be_written(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, audit_path: Path
) -> None:
    _break_writes(monkeypatch)

    with pytest.raises(AuditUnavailable, match="No space"):
        broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    assert broker.live_count() == 0
    assert audit_path.read_bytes() == b""


def test_redeem_returns_nothing_when_the_audit_cannot_be_written(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    _break_writes(monkeypatch)

    with pytest.raises(AuditUnavailable):
        redeem(broker, issued)
    monkeypatch.undo()
    with pytest.raises(TokenNotLive):  # spent: fail closed, no retry until the audit works
        redeem(broker, issued)


def test_refusals_report_a_broken_audit_too(broker: Broker, audit_path: Path) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    # A real filesystem failure, root-proof: the audit path becomes a symlink (O_NOFOLLOW refuses it).
    audit_path.rename(audit_path.with_suffix(".old"))
    audit_path.symlink_to(audit_path.with_suffix(".old"))

    with pytest.raises(AuditUnavailable) as caught:
        redeem(broker, issued, session="s2")
    assert isinstance(caught.value.__cause__, WrongSession)
    with pytest.raises(AuditUnavailable):
        redeem(broker, issued)


def test_a_broker_that_cannot_open_its_audit_does_not_start(
    make_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(AuditUnavailable):
        make_broker(audit_path=tmp_path / "a-file" / "audit.jsonl")
    with pytest.raises(AuditUnavailable, match="regular file"):
        make_broker(audit_path=Path("/dev/null"))


# -- revocation and refresh ------------------------------------------------------------------------


def test_revoke_session_kills_its_outstanding_tokens_only(broker: Broker, audit_path: Path) -> None:
    a = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    b = broker.issue("s1", "c1", "other", ["OTHER_KEY"], ttl=60)
    keep = broker.issue("s2", "c2", "github", ["GITHUB_TOKEN"], ttl=60)

    assert broker.revoke_session("s1") == 2

    for issued in (a, b):
        with pytest.raises(TokenNotLive):
            redeem(broker, issued)
    assert redeem(broker, keep, session="s2", container="c2")
    with pytest.raises(BrokerError, match="ended"):
        broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    (revoke,) = events(audit_path, "revoke", "allow")
    assert revoke["session"] == "s1"
    assert len(revoke["capabilities"]) == 2  # type: ignore[arg-type]


def test_revoke_container_kills_its_tokens(broker: Broker) -> None:
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    assert broker.revoke_container("c1") == 1

    with pytest.raises(TokenNotLive):
        redeem(broker, issued)


def test_refresh_supersedes_the_old_capability_and_reads_the_store_anew(
    broker: Broker, store: dict[str, str], clock: FakeClock
) -> None:
    first = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    clock.now += 50
    rotated = f"rotated-{uuid.uuid4().hex}"
    store["GITHUB_TOKEN"] = rotated

    second = broker.refresh("s1", "c1", "github")

    with pytest.raises(TokenNotLive):
        redeem(broker, first)
    clock.now += 50  # past the first one's expiry, inside the second's
    assert redeem(broker, second) == {"GITHUB_TOKEN": rotated}
    assert broker.live_count() == 0


def test_refresh_without_a_grant_is_refused(broker: Broker) -> None:
    with pytest.raises(BrokerError, match="nothing to refresh"):
        broker.refresh("s1", "c1", "github")


# -- the socket server -----------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run clients under other uids")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes, too short for pytest's tmp_path; and the other uids
    # of these tests must be able to traverse to the broker's own (private) directory.
    base = Path(tempfile.mkdtemp(prefix="cai-", dir="/tmp"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def serve() -> Iterator[Callable[..., BrokerServer]]:
    servers: list[tuple[BrokerServer, threading.Thread]] = []

    def start(path: Path, broker: Broker, **kwargs: object) -> BrokerServer:
        server = BrokerServer(path, broker, **kwargs)  # type: ignore[arg-type]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


CLIENT = r"""
import json, socket, sys
request = sys.stdin.read()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect_error": exc.errno}))
    sys.exit(0)
s.sendall(request.encode())
print(s.makefile("rb").readline().decode().strip() or json.dumps({"closed": True}))
"""


def _interpreter_for(uid: int) -> str:
    # The venv's interpreter may live under a home other uids cannot enter; the client is stdlib only.
    for candidate in (sys.executable, "/usr/bin/python3"):
        try:
            subprocess.run(
                [candidate, "-S", "-c", "pass"], user=uid, cwd="/", capture_output=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            continue
        return candidate
    pytest.skip(f"no Python interpreter that uid {uid} may run")


def client_as(uid: int, path: Path, request: dict[str, object], *, groups: list[int]) -> dict[str, object]:
    result = subprocess.run(
        [_interpreter_for(uid), "-S", "-c", CLIENT, str(path)],
        input=json.dumps(request) + "\n",
        user=uid,
        group=groups[0] if groups else uid,
        extra_groups=groups,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def in_process_request(path: Path, request: dict[str, object] | bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n")
        answer: dict[str, object] = json.loads(s.makefile("rb").readline())
        return answer


def redeem_request(issued: tuple[str, bytes]) -> dict[str, object]:
    return {
        "op": "redeem",
        "token": issued[0],
        "session": "s1",
        "container": "c1",
        "bundle": base64.b64encode(issued[1]).decode(),
    }


@needs_root
def test_the_stub_uid_redeems_over_the_socket(
    broker: Broker, sockdir: Path, serve: Callable[..., BrokerServer], store: dict[str, str], audit_path: Path
) -> None:
    path = sockdir / "broker" / "stub.sock"
    serve(path, broker, allowed_uids=[STUB_UID], group=STUB_GID)
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    first = client_as(STUB_UID, path, redeem_request(issued), groups=[STUB_GID])
    again = client_as(STUB_UID, path, redeem_request(issued), groups=[STUB_GID])

    assert first == {"ok": True, "secrets": {"GITHUB_TOKEN": store["GITHUB_TOKEN"]}}
    assert again["ok"] is False
    assert again["error"] == "not-live"
    (allowed,) = events(audit_path, "redeem", "allow")
    assert allowed["peer"]["uid"] == STUB_UID  # type: ignore[index]


@needs_root
def test_the_agent_uid_is_refused_by_peer_credentials_and_audited(
    broker: Broker, sockdir: Path, serve: Callable[..., BrokerServer], audit_path: Path
) -> None:
    path = sockdir / "broker" / "stub.sock"
    serve(path, broker, allowed_uids=[STUB_UID], group=STUB_GID)
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    # The agent given the stub's group (a test-only relaxation of the socket's ACL) reaches the
    # socket, so the peer-credential check is what must refuse it, before reading its request.
    answer = client_as(AGENT_UID, path, redeem_request(issued), groups=[STUB_GID])

    assert answer["ok"] is False
    assert answer["error"] == "peer-refused"
    (denied,) = events(audit_path, "connect", "deny")
    assert denied["peer"]["uid"] == AGENT_UID  # type: ignore[index]
    assert denied["reason"] == "PeerRefused"
    assert events(audit_path, "redeem", "allow") == []
    assert redeem(broker, issued)  # untouched by the refused attempt


@needs_root
def test_without_the_stub_group_the_agent_cannot_even_connect(
    broker: Broker, sockdir: Path, serve: Callable[..., BrokerServer]
) -> None:
    path = sockdir / "broker" / "stub.sock"
    serve(path, broker, allowed_uids=[STUB_UID], group=STUB_GID)

    answer = client_as(AGENT_UID, path, {"op": "redeem"}, groups=[])

    assert answer == {"connect_error": errno.EACCES}


@needs_root
def test_socket_and_directory_modes(
    broker: Broker, sockdir: Path, serve: Callable[..., BrokerServer]
) -> None:
    grouped = serve(sockdir / "stub" / "broker.sock", broker, allowed_uids=[STUB_UID], group=STUB_GID)
    private = serve(sockdir / "admin" / "broker.sock", broker, allowed_uids=[0], ops=ADMIN_OPS)

    def mode(p: Path) -> tuple[int, int, bool]:
        info = p.lstat()
        return stat.S_IMODE(info.st_mode), info.st_gid, stat.S_ISSOCK(info.st_mode)

    assert mode(grouped.path) == (0o660, STUB_GID, True)
    assert mode(grouped.path.parent) == (0o710, STUB_GID, False)
    assert mode(private.path)[:1] == (0o600,)
    assert mode(private.path.parent)[:1] == (0o700,)


def _tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:  # noqa: PTH123
            next(f)
            inodes |= {line.split()[9] for line in f}
    return inodes


def _own_socket_inodes() -> set[str]:
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_the_server_opens_no_tcp_socket(
    broker: Broker, sockdir: Path, serve: Callable[..., BrokerServer]
) -> None:
    before = _own_socket_inodes() & _tcp_inodes()
    server = serve(sockdir / "b" / "stub.sock", broker, allowed_uids=[os.getuid()])
    in_process_request(server.path, {"op": "ping"})  # a live connection too

    assert server.socket.family == socket.AF_UNIX
    assert (_own_socket_inodes() & _tcp_inodes()) - before == set()


def test_the_stub_socket_refuses_admin_ops_and_the_admin_socket_issues(
    broker: Broker, sockdir: Path, serve: Callable[..., BrokerServer], audit_path: Path, store: dict[str, str]
) -> None:
    stub = serve(sockdir / "stub" / "s.sock", broker, allowed_uids=[os.getuid()])
    admin = serve(sockdir / "admin" / "a.sock", broker, allowed_uids=[os.getuid()], ops=ADMIN_OPS)
    issue = {
        "op": "issue",
        "session": "s1",
        "container": "c1",
        "consumer": "github",
        "secrets": ["GITHUB_TOKEN"],
        "ttl": 60,
    }

    refused = in_process_request(stub.path, issue)
    issued = in_process_request(admin.path, issue)
    redeemed_on_admin = in_process_request(
        admin.path, redeem_request((str(issued["token"]), base64.b64decode(str(issued["bundle"]))))
    )
    redeemed = in_process_request(
        stub.path, redeem_request((str(issued["token"]), base64.b64decode(str(issued["bundle"]))))
    )
    revoked = in_process_request(admin.path, {"op": "revoke", "session": "s1"})

    assert (refused["ok"], refused["error"]) == (False, "peer-refused")
    assert (redeemed_on_admin["ok"], redeemed_on_admin["error"]) == (False, "peer-refused")
    assert redeemed == {"ok": True, "secrets": {"GITHUB_TOKEN": store["GITHUB_TOKEN"]}}
    assert revoked == {"ok": True, "revoked": 0}
    assert [e["event"] for e in events(audit_path, "issue", "deny")] == ["issue"]


@pytest.mark.parametrize(
    ("request_bytes", "error"),
    [
        (b"not json\n", "bad-request"),
        (b"[1,2]\n", "bad-request"),
        (b'{"op":"redeem","token":1,"session":"s1","container":"c1","bundle":""}\n', "bad-request"),
        (b'{"op":"redeem","token":"x","session":"s1","container":"c1","bundle":"%%"}\n', "bad-request"),
        (b'{"op":"redeem","token":"x","session":"s1","container":"c1","bundle":""}\n', "malformed"),
        (b'{"op":"nope"}\n', "bad-request"),
        (b'{"op":"issue","session":"s","container":"c","consumer":"g","secrets":[{}],"ttl":5}\n', "refused"),
        (
            b'{"op":"issue","session":"s","container":"c","consumer":"g","secrets":["A"],"ttl":true}\n',
            "bad-request",
        ),
        (b'{"op":"redeem","pad":"' + b"a" * 70_000 + b'"}\n', "bad-request"),
    ],
    ids=[
        "not-json",
        "not-object",
        "wrong-type",
        "bad-base64",
        "bad-token",
        "unknown-op",
        "junk-names",
        "bool-ttl",
        "oversized",
    ],
)
def test_bad_requests_get_a_typed_answer(
    broker: Broker, sockdir: Path, serve: Callable[..., BrokerServer], request_bytes: bytes, error: str
) -> None:
    server = serve(sockdir / "b" / "stub.sock", broker, allowed_uids=[os.getuid()], ops=STUB_OPS | ADMIN_OPS)

    answer = in_process_request(server.path, request_bytes)

    assert (answer["ok"], answer["error"]) == (False, error)


def test_an_existing_directory_of_another_owner_is_refused(broker: Broker, sockdir: Path) -> None:
    foreign = sockdir / "foreign"
    foreign.mkdir()
    os.chown(foreign, STUB_UID, STUB_UID)

    with pytest.raises(BrokerError, match="belongs to uid"):
        BrokerServer(foreign / "s.sock", broker, allowed_uids=[STUB_UID])


def test_the_daemon_serves_and_stops_cleanly_on_sigterm(sockdir: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "secret-broker"
    stub, admin, audit = sockdir / "stub" / "s.sock", sockdir / "admin" / "a.sock", tmp_path / "audit.jsonl"
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "secrets.env").write_text("STORED=from-the-host-store\n")
    (home / "config" / "secrets.env").chmod(0o600)
    process = subprocess.Popen(
        [
            str(script),
            "--socket",
            str(stub),
            "--allow-uid",
            str(STUB_UID),
            "--audit",
            str(audit),
            "--admin-socket",
            str(admin),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CONTAINAI_HOME": str(home)},
    )
    try:
        deadline = time.monotonic() + 20
        while not (stub.exists() and admin.exists()) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
        # The host's store answers for what it has; a name it lacks is refused, and audited.
        issue = {"op": "issue", "session": "s1", "container": "c1", "consumer": "g", "ttl": 60}
        answer = in_process_request(admin, {**issue, "secrets": ["STORED"]})
        assert answer["ok"] is True and str(answer["token"]).startswith("cai1.")
        answer = in_process_request(admin, {**issue, "consumer": "h", "secrets": ["MISSING"]})
        assert (answer["ok"], answer["error"]) == (False, "secret-unavailable")

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
    assert not stub.exists()
    assert not admin.exists()
    found = verify(audit, finished=True)
    assert (found.ok, found.lines, found.closed) == (True, 3, True), found
    assert b"from-the-host-store" not in audit.read_bytes()


def test_the_lookup_may_return_the_stores_secret_type(
    make_broker: Callable[..., Broker], canary: str
) -> None:
    broker = make_broker(lookup=lambda name: Secret(canary) if name == "GITHUB_TOKEN" else None)
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    secrets = broker.redeem(issued.token, session="s1", container="c1", bundle=issued.bundle, peer=HOST_PEER)

    assert isinstance(secrets["GITHUB_TOKEN"], Secret)
    assert secrets["GITHUB_TOKEN"].reveal() == canary
