"""The broker's audit as a keyed chain, and the rate limit on its refusal lines.

Each kind of tampering (an edited, deleted, reordered or cut line, a line forged without the key, an
older unkeyed log) is made to a real audit written by a real Broker, and ``verify`` must name the
line and the kind. The flood tests drive 10,000 refusals through the broker on a controlled clock.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from containai.broker.audit import chain_key_path, checkpoint_path, line_mac, verify
from containai.broker.broker import Broker, Peer
from containai.broker.refusals import DEFAULT_BURST, RefusalLimiter

from .test_broker import (  # noqa: F401  # fixtures used below
    FakeClock,
    audit_path,
    broker,
    canary,
    clock,
    make_broker,
    rand,
    redeem,
    store,
)

AGENT = Peer(pid=4321, uid=1000, gid=1000)


@pytest.fixture
def closed_log(broker: Broker, audit_path: Path) -> list[bytes]:  # noqa: F811
    """A finished session's audit: issue, redeem, a refusal, revoke, close (six lines with the refresh)."""
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    redeem(broker, issued)
    broker.refuse_peer(AGENT, op="connect")
    broker.refresh("s1", "c1", "github")
    broker.revoke_session("s1")
    broker.close()
    return audit_path.read_bytes().splitlines(keepends=True)


def write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def rewritten(line: bytes, **changes: object) -> bytes:
    entry = json.loads(line)
    entry.update(changes)
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def test_an_intact_log_verifies_with_its_count_and_close_line(
    closed_log: list[bytes],
    audit_path: Path,  # noqa: F811
) -> None:
    found = verify(audit_path, finished=True)

    assert (found.ok, found.lines, found.closed) == (True, 6, True), found
    assert found.render() == "OK: 6 lines, chain intact, closed"
    entries = [json.loads(line) for line in closed_log]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert all(entries[i]["prev"] == entries[i - 1]["mac"] for i in range(1, 6))
    # The key and the checkpoint are the host's alone.
    for path in (chain_key_path(audit_path), checkpoint_path(audit_path)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_an_edited_line_is_named(closed_log: list[bytes], audit_path: Path) -> None:  # noqa: F811
    closed_log[2] = rewritten(closed_log[2], outcome="allow")
    write(audit_path, closed_log)

    found = verify(audit_path, finished=True)

    assert (found.ok, found.broken, found.line) == (False, "edited", 3), found
    assert found.render().startswith("BROKEN at line 3: edited")


def test_an_edit_that_redoes_an_unkeyed_chain_is_still_caught(
    closed_log: list[bytes],
    audit_path: Path,  # noqa: F811
) -> None:
    # What fooled the old chain: change a line, then recompute every link after it. Without the key
    # the best a forger can do is a MAC under a key of their own.
    forged_key = os.urandom(32)
    entries = [json.loads(line) for line in closed_log]
    entries[1]["fingerprints"] = {"GITHUB_TOKEN": "hmac-sha256:" + "0" * 32}
    for i, entry in enumerate(entries):
        if i >= 1:
            entry["prev"] = entries[i - 1]["mac"]
            entry["mac"] = line_mac(forged_key, entry)
    write(
        audit_path, [json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n" for e in entries]
    )

    found = verify(audit_path, finished=True)

    assert (found.broken, found.line) == ("edited", 2), found


def test_a_line_in_another_json_spelling_is_an_edit(closed_log: list[bytes], audit_path: Path) -> None:  # noqa: F811
    # Same content, duplicated key: a reader that takes the first "outcome" would see another story.
    closed_log[2] = closed_log[2].replace(b'{"', b'{"outcome":"allow","', 1)
    write(audit_path, closed_log)

    assert (verify(audit_path, finished=True).broken, verify(audit_path, finished=True).line) == ("edited", 3)


def test_a_deleted_line_is_named(closed_log: list[bytes], audit_path: Path) -> None:  # noqa: F811
    write(audit_path, closed_log[:1] + closed_log[2:])

    found = verify(audit_path, finished=True)

    assert (found.broken, found.line) == ("deleted", 2), found
    assert "line 2 of the chain" in found.detail


def test_reordered_lines_are_named(closed_log: list[bytes], audit_path: Path) -> None:  # noqa: F811
    closed_log[2], closed_log[3] = closed_log[3], closed_log[2]
    write(audit_path, closed_log)

    found = verify(audit_path, finished=True)

    assert (found.broken, found.line) == ("reordered", 3), found


def test_a_cut_tail_is_caught_by_the_checkpoint(closed_log: list[bytes], audit_path: Path) -> None:  # noqa: F811
    write(audit_path, closed_log[:4])

    # Even for a running session, which has no close line yet.
    found = verify(audit_path, finished=False)

    assert (found.broken, found.line) == ("truncated", 5), found
    assert "ends at line 4, its checkpoint at 6" in found.detail


def test_a_cut_tail_and_a_deleted_checkpoint_are_caught(closed_log: list[bytes], audit_path: Path) -> None:  # noqa: F811
    write(audit_path, closed_log[:4])
    checkpoint_path(audit_path).unlink()

    assert verify(audit_path, finished=True).broken == "truncated"


def test_a_half_line_at_the_end_is_a_cut(closed_log: list[bytes], audit_path: Path) -> None:  # noqa: F811
    write(audit_path, [*closed_log[:5], closed_log[5][:40]])

    found = verify(audit_path, finished=True)

    assert (found.broken, found.line) == ("truncated", 6), found


def test_a_finished_log_without_its_close_line_was_cut(broker: Broker, audit_path: Path) -> None:  # noqa: F811
    # A broker that never closed (killed, or the tail and the checkpoint both rewound to a valid point).
    broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    broker.revoke_session("s1")

    assert verify(audit_path, finished=False).ok
    found = verify(audit_path, finished=True)
    assert (found.broken, found.line) == ("truncated", 3), found
    assert "no close line" in found.detail


def test_a_checkpoint_rewritten_without_the_key_does_not_verify(
    closed_log: list[bytes],
    audit_path: Path,  # noqa: F811
) -> None:
    write(audit_path, closed_log[:4])
    entry = json.loads(closed_log[3])
    checkpoint_path(audit_path).write_text(json.dumps({"seq": 4, "mac": entry["mac"], "check": "0" * 64}))

    found = verify(audit_path, finished=False)

    assert (found.broken, found.line) == ("edited", None), found


def test_the_key_is_needed_another_key_or_none_fails(closed_log: list[bytes], audit_path: Path) -> None:  # noqa: F811
    key_file = chain_key_path(audit_path)
    key_file.write_text(os.urandom(32).hex())
    assert (verify(audit_path, finished=True).broken, verify(audit_path, finished=True).line) == ("edited", 1)

    key_file.unlink()
    found = verify(audit_path, finished=True)
    assert (found.broken, found.line) == ("unkeyed", None)
    assert "no chain key" in found.detail


def test_an_older_unkeyed_log_is_named_legacy(audit_path: Path) -> None:  # noqa: F811
    audit_path.parent.mkdir(exist_ok=True)
    line = json.dumps({"event": "issue", "outcome": "allow", "prev": "0" * 64}, sort_keys=True).encode()
    audit_path.write_bytes(line + b"\n")
    chain_key_path(audit_path).write_text(os.urandom(32).hex())

    found = verify(audit_path, finished=False)

    assert (found.broken, found.line) == ("unkeyed", 1), found


def test_a_restarted_broker_continues_seq_and_keeps_its_key(
    make_broker: Callable[..., Broker],  # noqa: F811
    audit_path: Path,  # noqa: F811
) -> None:
    first = make_broker()
    first.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    first.close()
    key = chain_key_path(audit_path).read_text()
    second = make_broker()
    second.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    second.close()

    assert chain_key_path(audit_path).read_text() == key
    found = verify(audit_path, finished=True)
    assert (found.ok, found.lines) == (True, 4), found


# -- the rate limit on refusals ------------------------------------------------------------------


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def suppressed(entries: list[dict[str, object]], op: str) -> int:
    return sum(
        int(str(e["suppressed"])) for e in entries if e["event"] == "suppressed" and e["refused"] == op
    )


def test_a_flood_of_ten_thousand_refusals_writes_a_bounded_number_of_lines(
    broker: Broker,  # noqa: F811
    audit_path: Path,  # noqa: F811
) -> None:
    for _ in range(10_000):
        broker.refuse_peer(AGENT, op="connect")
    broker.close()

    entries = lines_of(audit_path)
    denied = [e for e in entries if e["event"] == "connect"]
    assert len(denied) == DEFAULT_BURST
    assert len(entries) == DEFAULT_BURST + 2  # the burst, one summary, the close line
    assert suppressed(entries, "connect") == 10_000 - DEFAULT_BURST
    assert verify(audit_path, finished=True).ok


def test_a_long_flood_writes_a_line_per_refill_and_counts_the_rest(
    make_broker: Callable[..., Broker],  # noqa: F811
    clock: FakeClock,  # noqa: F811
    audit_path: Path,  # noqa: F811
) -> None:
    limited = make_broker(refusals=RefusalLimiter(clock=clock, burst=5, per_second=1.0))
    for _ in range(100):  # 100 seconds, 100 refusals a second
        for _ in range(100):
            limited.refuse_peer(AGENT, op="connect")
        clock.now += 1.0
    limited.close()

    entries = lines_of(audit_path)
    denied = [e for e in entries if e["event"] == "connect"]
    assert len(denied) == 5 + 99  # the burst, then one per second
    assert len(denied) + suppressed(entries, "connect") == 10_000
    assert len(entries) <= 2 * len(denied) + 1


def test_a_flood_of_one_kind_does_not_hide_another_or_any_issue(broker: Broker, audit_path: Path) -> None:  # noqa: F811
    for _ in range(1_000):
        broker.refuse_peer(AGENT, op="connect")
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)
    redeem(broker, issued)
    with pytest.raises(Exception, match="not-live"):
        redeem(broker, issued)
    for _ in range(100):
        broker.refresh("s1", "c1", "github")
    broker.revoke_session("s1")

    entries = lines_of(audit_path)
    allowed = [e["event"] for e in entries if e["outcome"] == "allow"]
    assert allowed.count("refresh") == 100 and allowed.count("redeem") == 1 and allowed[-1] == "revoke"
    # The replay is its own kind of refusal, so its line is written despite the flood.
    assert [e["reason"] for e in entries if e["event"] == "redeem" and e["outcome"] == "deny"] == ["not-live"]
