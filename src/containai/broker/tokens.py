"""Capability tokens: what a stub presents to the broker to have one sealed bundle opened.

A token names who may use it (session, container, consumer), which secrets it unlocks, when it was
issued and when it expires, and a random id; it is MAC'd with HMAC-SHA256 under a key that only the
broker holds (in memory, so a broker restart kills every token). It carries no secret and no key.

Wire form, all ASCII::

    cai1.<base64url(payload)>.<base64url(tag)>        (no padding)

    payload = canonical JSON (sorted keys, no spaces) of
              {"cid", "exp", "iat", "id", "names", "sid", "sub"}
    tag     = HMAC-SHA256(key, b"cai1." + base64url(payload))

The version prefix is inside the MAC and is matched exactly: there is no algorithm field to negotiate.
Verification checks shape and MAC before it parses a byte of the payload, then parses strictly
(exact key set, types, sizes, canonical form), then checks binding and expiry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from containai.errors import (
    TokenExpired,
    TokenForged,
    TokenMalformed,
    WrongContainer,
    WrongSession,
)
from containai.inside import protocol

PREFIX = "cai1"
MAX_TOKEN_CHARS = 4096
MAX_NAMES = 64
KEY_BYTES = 32
TAG_BYTES = 32
ID_HEX_CHARS = 32

# Session ids, container ids, consumer (stub) names and secret names share one conservative alphabet:
# they end up in audit lines and in the bundle's associated data, where ambiguity would be a bug.
_NAME = re.compile(protocol.BROKER_NAME_PATTERN)
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_HEX_ID = re.compile(rf"[0-9a-f]{{{ID_HEX_CHARS}}}")
_FIELDS = frozenset({"cid", "exp", "iat", "id", "names", "sid", "sub"})


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


@dataclass(frozen=True)
class Capability:
    """What a token grants. ``names`` is sorted and duplicate-free; times are whole epoch seconds."""

    id: str
    session: str
    container: str
    consumer: str
    names: tuple[str, ...]
    issued_at: int
    expires_at: int

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.id, str) and _HEX_ID.fullmatch(self.id)):
            problems.append("id")
        for label, value in (
            ("session", self.session),
            ("container", self.container),
            ("consumer", self.consumer),
        ):
            if not is_valid_name(value):
                problems.append(label)
        if (
            not isinstance(self.names, tuple)
            or not 0 < len(self.names) <= MAX_NAMES
            or not all(is_valid_name(n) for n in self.names)
            or list(self.names) != sorted(set(self.names))
        ):
            problems.append("names")
        for label, t in (("issued_at", self.issued_at), ("expires_at", self.expires_at)):
            # bool is an int to Python; a token saying "exp": true must not mean 1970.
            if type(t) is not int or t < 0:
                problems.append(label)
        if not problems and self.expires_at <= self.issued_at:
            problems.append("expires_at")
        if problems:
            raise TokenMalformed(f"bad capability field(s): {', '.join(problems)}")

    def payload(self) -> bytes:
        return _canonical(
            {
                "cid": self.container,
                "exp": self.expires_at,
                "iat": self.issued_at,
                "id": self.id,
                "names": list(self.names),
                "sid": self.session,
                "sub": self.consumer,
            }
        )


def issue(capability: Capability, *, key: bytes) -> str:
    """The token for ``capability``, MAC'd under ``key``."""
    _check_key(key)
    signed = f"{PREFIX}.{_b64encode(capability.payload())}"
    return f"{signed}.{_b64encode(_tag(key, signed))}"


def verify(token: str | bytes, *, key: bytes, now: float, session: str, container: str) -> Capability:
    """The capability ``token`` grants, if it is ours, unexpired, and bound to ``session`` and ``container``.

    Raises one of TokenMalformed, TokenForged, WrongSession, WrongContainer, TokenExpired; nothing else.
    Single use is not checked here: that needs the broker's state.
    """
    _check_key(key)
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise TokenMalformed("not ASCII") from None
    if not isinstance(token, str):
        raise TokenMalformed("not a string")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenMalformed(f"longer than {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenMalformed(f"not a {PREFIX} token")
    payload_bytes = _b64decode(parts[1])
    tag = _b64decode(parts[2])
    if len(tag) != TAG_BYTES:
        raise TokenMalformed("tag has the wrong length")
    if not hmac.compare_digest(tag, _tag(key, f"{parts[0]}.{parts[1]}")):
        raise TokenForged("the MAC does not verify")
    capability = _parse_payload(payload_bytes)
    # Binding first, so the audit of a cross-session attempt says so even if the token is also old.
    if capability.session != session:
        raise WrongSession("issued to another session")
    if capability.container != container:
        raise WrongContainer("issued to another container")
    if now >= capability.expires_at:
        raise TokenExpired("past its expiry")
    return capability


def _parse_payload(raw: bytes) -> Capability:
    # Only reached with a valid MAC, so a failure here means a broker bug, not an attacker; parse
    # strictly anyway, because "valid signature" must never become "whatever the JSON says".
    try:
        data: Any = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise TokenMalformed("payload is not JSON") from None
    if not isinstance(data, dict) or set(data) != _FIELDS:
        raise TokenMalformed("payload has unknown or missing fields")
    names = data["names"]
    if not isinstance(names, list):
        raise TokenMalformed("names is not a list")
    capability = Capability(
        id=data["id"],
        session=data["sid"],
        container=data["cid"],
        consumer=data["sub"],
        names=tuple(names),
        issued_at=data["iat"],
        expires_at=data["exp"],
    )
    if capability.payload() != raw:
        raise TokenMalformed("payload is not in canonical form")
    return capability


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < KEY_BYTES:
        raise ValueError(f"token keys are at least {KEY_BYTES} random bytes")


def _tag(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # Strict: only the unpadded base64url alphabet, and only the one encoding of each byte string
    # (base64 ignores stray low bits in the last character, which would make tokens malleable).
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenMalformed("bad base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenMalformed("bad base64url") from None
    if _b64encode(raw) != text:
        raise TokenMalformed("non-canonical base64url")
    return raw
