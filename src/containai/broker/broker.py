"""The broker core: issue capabilities with sealed bundles, redeem each once, revoke, audit it all.

State lives only in memory: the token key, the audit key, and for each live capability the key of
its bundle. Nothing secret is written anywhere; the only files are the audit, which holds
fingerprints, and beside it the chain key that MACs its lines (see ``audit``), which opens nothing.
A capability is live from issue until it is redeemed, revoked (its session ended or its container
died), superseded by a refresh, or the broker stops; ``redeem`` takes it out of the live table under a
lock before anything else, which is what makes it single-use even under concurrent redemptions.

The clock and the randomness are injected so that tests control expiry and see every byte drawn.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from containai.broker import sealing, tokens
from containai.broker.audit import SUPPRESSED, AuditLog
from containai.broker.refusals import RefusalLimiter, Suppressed
from containai.broker.tokens import Capability
from containai.errors import (
    AuditUnavailable,
    BrokerError,
    BundleRefused,
    CapabilityRefused,
    PeerRefused,
    SecretUnavailable,
    TokenNotLive,
    WrongConsumer,
)
from containai.secrets.value import Secret

Lookup = Callable[[str], Secret | str | None]
"""Where secret values come from: the host store (``SecretSource.get`` fits), wired by the caller.

``None`` means "not stored"."""

DEFAULT_MAX_TTL = 300
"""Five minutes: a stub redeems at start; longer sessions ask for a refresh instead of a long token."""


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a socket, from SO_PEERCRED (pid as seen in the broker's namespace)."""

    pid: int
    uid: int
    gid: int

    def as_audit(self) -> dict[str, int]:
        return {"pid": self.pid, "uid": self.uid, "gid": self.gid}


HOST = Peer(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())
"""The broker's own process, for operations called in-process by the launcher."""


class Issued(NamedTuple):
    """A fresh capability: the token and its sealed bundle, both for the container's tmpfs."""

    token: str
    bundle: bytes


@dataclass(frozen=True)
class _Live:
    capability: Capability
    data_key: bytes


@dataclass(frozen=True)
class _Grant:
    names: tuple[str, ...]
    ttl: int


class Broker:
    def __init__(
        self,
        *,
        lookup: Lookup,
        audit_path: Path,
        clock: Callable[[], float] = time.time,
        randbytes: Callable[[int], bytes] = os.urandom,
        max_ttl: int = DEFAULT_MAX_TTL,
        refusals: RefusalLimiter | None = None,
    ) -> None:
        if max_ttl <= 0:
            raise ValueError("max_ttl must be positive")
        self._lookup = lookup
        self._clock = clock
        self._randbytes = randbytes
        self._max_ttl = max_ttl
        # Two keys, both memory-only: tokens and fingerprints must not be forgeable from each other.
        self._token_key = randbytes(tokens.KEY_BYTES)
        self.audit = AuditLog(audit_path, key=randbytes(32), clock=clock)
        self._refusals = refusals or RefusalLimiter(clock=clock)
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._grants: dict[tuple[str, str, str], _Grant] = {}
        self._ended_sessions: set[str] = set()
        self._ended_containers: set[str] = set()

    # -- issuing --------------------------------------------------------------------------------

    def issue(
        self, session: str, container: str, consumer: str, secret_names: Iterable[str], ttl: int
    ) -> Issued:
        """A capability for ``consumer`` in ``session``/``container`` to receive ``secret_names`` once."""
        return self._issue(session, container, consumer, tuple(secret_names), ttl, event="issue")

    def refresh(self, session: str, container: str, consumer: str, ttl: int | None = None) -> Issued:
        """A fresh capability for the same secrets as ``consumer``'s last grant, with values looked up anew.

        Any of that consumer's capabilities still live are superseded (dropped), so a long session holds
        one live capability per consumer however often it refreshes.
        """
        with self._lock:
            grant = self._grants.get((session, container, consumer))
        if grant is None:
            refusal = BrokerError(
                f"nothing to refresh: {consumer} has no capability in session {session}",
                hint="issue a capability first; refresh renews an existing grant",
            )
            self._audit_refusal("refresh", refusal, session=session, container=container, consumer=consumer)
            raise refusal
        return self._issue(
            session, container, consumer, grant.names, grant.ttl if ttl is None else ttl, event="refresh"
        )

    def _issue(
        self, session: str, container: str, consumer: str, names: tuple[str, ...], ttl: int, *, event: str
    ) -> Issued:
        context: dict[str, object] = {"session": session, "container": container, "consumer": consumer}
        try:
            self._check_request(session, container, consumer, names, ttl)
            values: dict[str, str] = {}
            missing = []
            for name in sorted(set(names)):
                value = self._lookup(name)
                if value is None:
                    missing.append(name)
                else:
                    values[name] = value.reveal() if isinstance(value, Secret) else value
            if missing:
                raise SecretUnavailable(missing)
        except BrokerError as refusal:
            # Only well-formed names reach the audit; a request's junk does not.
            self._audit_refusal(
                event, refusal, names=sorted({n for n in names if tokens.is_valid_name(n)}), **context
            )
            raise
        now = int(self._clock())
        capability = Capability(
            id=self._randbytes(tokens.ID_HEX_CHARS // 2).hex(),
            session=session,
            container=container,
            consumer=consumer,
            names=tuple(sorted(values)),
            issued_at=now,
            expires_at=now + ttl,
        )
        data_key = sealing.new_data_key(self._randbytes)
        bundle = sealing.seal(values, key=data_key, capability=capability, randbytes=self._randbytes)
        token = tokens.issue(capability, key=self._token_key)
        with self._lock:
            # Checked again under the lock: a session may have ended while we looked secrets up.
            if session in self._ended_sessions or container in self._ended_containers:
                ended = BrokerError(f"session {session} or its container has ended")
                self._audit_refusal(event, ended, names=list(capability.names), **context)
                raise ended
            superseded = [
                cap_id
                for cap_id, live in self._live.items()
                if event == "refresh"
                and (live.capability.session, live.capability.container, live.capability.consumer)
                == (session, container, consumer)
            ]
            # Audit before the capability exists: if the line cannot be written, no token is live.
            self.audit.record(
                event,
                outcome="allow",
                capability=capability.id,
                names=list(capability.names),
                fingerprints=self.audit.fingerprints(values),
                token=self.audit.fingerprint(token),
                expires_at=capability.expires_at,
                superseded=superseded,
                **context,
            )
            for cap_id in superseded:
                del self._live[cap_id]
            # Expired capabilities can never be redeemed; drop their keys rather than keep them forever.
            for cap_id in [c for c, live in self._live.items() if live.capability.expires_at <= now]:
                del self._live[cap_id]
            self._live[capability.id] = _Live(capability, data_key)
            self._grants[(session, container, consumer)] = _Grant(capability.names, ttl)
        return Issued(token, bundle)

    def _check_request(
        self, session: str, container: str, consumer: str, names: tuple[str, ...], ttl: int
    ) -> None:
        for label, value in (("session", session), ("container", container), ("consumer", consumer)):
            if not tokens.is_valid_name(value):
                raise BrokerError(f"bad {label} name {value!r}")
        if not names or not all(tokens.is_valid_name(n) for n in names) or len(set(names)) > tokens.MAX_NAMES:
            raise BrokerError(f"a capability names 1 to {tokens.MAX_NAMES} secrets by plain names")
        if type(ttl) is not int or not 0 < ttl <= self._max_ttl:
            raise BrokerError(
                f"ttl must be whole seconds between 1 and {self._max_ttl}",
                hint="long sessions call refresh for a fresh capability rather than asking for a long one",
            )
        if session in self._ended_sessions or container in self._ended_containers:
            raise BrokerError(f"session {session} or its container has ended")

    # -- redeeming -------------------------------------------------------------------------------

    def redeem(
        self,
        token: str | bytes,
        *,
        session: str,
        container: str,
        bundle: bytes,
        peer: Peer,
        consumer: str | None = None,
    ) -> dict[str, Secret]:
        """Open ``bundle`` for the holder of ``token``, once. Every outcome is audited.

        Refusals raise a CapabilityRefused (or BundleRefused); if the audit cannot be written the call
        raises AuditUnavailable and returns nothing, even when the token was good. With ``consumer``
        (the server bound to the peer's uid), a capability of any other consumer is refused unspent: a
        server that got hold of another's token can neither redeem it nor use it up. A capability is
        spent as soon as it is taken for redemption: a failure after that point (tampered bundle,
        audit) does not give it back, since retrying is what an attacker would want.
        """
        context: dict[str, object] = {
            "session": session,
            "container": container,
            "peer": peer.as_audit(),
            "token": self.audit.fingerprint(token),
        }
        try:
            capability = tokens.verify(
                token, key=self._token_key, now=self._clock(), session=session, container=container
            )
        except CapabilityRefused as refusal:
            self._audit_refusal("redeem", refusal, **context)
            raise
        context |= {
            "consumer": capability.consumer,
            "capability": capability.id,
            "names": list(capability.names),
        }
        if consumer is not None and capability.consumer != consumer:
            wrong = WrongConsumer(
                f"issued to MCP server {capability.consumer}, presented by {consumer}'s uid"
            )
            self._audit_refusal("redeem", wrong, **context, presented_by=consumer)
            raise wrong
        with self._lock:
            live = self._live.pop(capability.id, None)
        if live is None:
            spent = TokenNotLive("already redeemed, revoked, superseded, or issued by an earlier broker")
            self._audit_refusal("redeem", spent, **context)
            raise spent
        try:
            values = sealing.open_bundle(bundle, key=live.data_key, capability=live.capability)
        except BundleRefused as refusal:
            self._audit_refusal("redeem", refusal, **context)
            raise
        self.audit.record("redeem", outcome="allow", fingerprints=self.audit.fingerprints(values), **context)
        return {name: Secret(value) for name, value in values.items()}

    # -- revoking --------------------------------------------------------------------------------

    def revoke_session(self, session: str) -> int:
        """Kill every capability of ``session`` and refuse to issue it more; the number killed."""
        return self._revoke("session", session, self._ended_sessions)

    def revoke_container(self, container: str) -> int:
        """As revoke_session, for a container that died (from the engine's die/destroy events)."""
        return self._revoke("container", container, self._ended_containers)

    def _revoke(self, kind: str, value: str, ended: set[str]) -> int:
        def bound(session: str, container: str) -> bool:
            return (session if kind == "session" else container) == value

        with self._lock:
            ended.add(value)
            killed = sorted(
                cap_id
                for cap_id, live in self._live.items()
                if bound(live.capability.session, live.capability.container)
            )
            for cap_id in killed:
                del self._live[cap_id]
            self._grants = {key: grant for key, grant in self._grants.items() if not bound(key[0], key[1])}
        # Revocation takes effect first; only then can a failed audit be reported.
        self.audit.record("revoke", outcome="allow", **{kind: value}, capabilities=killed)
        return len(killed)

    def live_count(self) -> int:
        with self._lock:
            return len(self._live)

    # -- peers -----------------------------------------------------------------------------------

    def refuse_peer(self, peer: Peer, *, op: str) -> PeerRefused:
        """Audit a socket peer that may not do ``op``, and return the error to raise."""
        refusal = PeerRefused(uid=peer.uid, pid=peer.pid, op=op)
        self._audit_refusal(op, refusal, peer=peer.as_audit())
        return refusal

    def refuse(self, event: str, refusal: BrokerError, **fields: object) -> BrokerError:
        """Audit a refusal decided outside the broker (by its socket server), and return it to raise."""
        try:
            self._audit_refusal(event, refusal, **fields)
        except AuditUnavailable as exc:
            return exc
        return refusal

    def close(self) -> None:
        """The audit's last lines when the broker stops cleanly: what was held back, then ``close``."""
        for held in self._refusals.drain():
            self._audit_suppressed(held)
        self.audit.close()

    def _audit_refusal(self, event: str, refusal: BrokerError, **fields: object) -> None:
        reason = refusal.reason if isinstance(refusal, CapabilityRefused) else type(refusal).__name__
        # A flood of refusals is counted, not written line by line: it must not fill the disk.
        admitted, held = self._refusals.admit((event, reason))
        try:
            if held is not None:
                self._audit_suppressed(held)
            if admitted:
                self.audit.record(event, outcome="deny", reason=reason, detail=refusal.message, **fields)
        except AuditUnavailable as audit_failure:
            # Still a refusal; the operator needs to hear about the audit first.
            raise audit_failure from refusal

    def _audit_suppressed(self, held: Suppressed) -> None:
        self.audit.record(
            SUPPRESSED,
            outcome="deny",
            refused=held.kind[0],
            reason=held.kind[1],
            suppressed=held.count,
            first=_iso(held.first),
            last=_iso(held.last),
        )


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
