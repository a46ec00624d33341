"""Sealed bundles: the secrets one capability unlocks, encrypted for the broker alone to open.

The bundle travels to the container's tmpfs (/run/containai) beside its token; the key that opens it
(32 random bytes, one per bundle) stays in the broker's memory and is dropped when the capability is
redeemed, revoked or superseded. So a copied bundle is useless without the broker, and useless with it
once the capability is spent.

Layout::

    b"CAIB\\x01" | nonce (12 random bytes) | ChaCha20-Poly1305(key, nonce, plaintext, aad)

    plaintext = canonical JSON {name: value}
    aad       = b"containai-bundle-v1\\0" + canonical JSON of the capability's id, session,
                container, consumer, names and expiry

The associated data binds the bundle to its capability: another session's bundle, an older bundle of
the same consumer, or any changed byte fails authentication (threat catalogue #25). A fresh key per
bundle means a random 96-bit nonce is used once per key; nonce reuse is not a concern.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from containai.broker.tokens import Capability
from containai.errors import BundleRefused

MAGIC = b"CAIB\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
MAX_BUNDLE_BYTES = 64 * 1024
_AAD_LABEL = b"containai-bundle-v1\x00"


def new_data_key(randbytes: Callable[[int], bytes]) -> bytes:
    key = randbytes(KEY_BYTES)
    if len(key) != KEY_BYTES:
        raise ValueError("the randomness source returned a short key")
    return key


def bundle_aad(capability: Capability) -> bytes:
    return _AAD_LABEL + _canonical(
        {
            "cid": capability.container,
            "exp": capability.expires_at,
            "id": capability.id,
            "names": list(capability.names),
            "sid": capability.session,
            "sub": capability.consumer,
        }
    )


def seal(
    secrets: Mapping[str, str],
    *,
    key: bytes,
    capability: Capability,
    randbytes: Callable[[int], bytes],
) -> bytes:
    """A bundle holding ``secrets`` (exactly the capability's names), sealed under ``key``."""
    if sorted(secrets) != list(capability.names):
        raise ValueError("a bundle holds exactly the secrets its capability names")
    nonce = randbytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError("the randomness source returned a short nonce")
    sealed = ChaCha20Poly1305(key).encrypt(nonce, _canonical(dict(secrets)), bundle_aad(capability))
    bundle = MAGIC + nonce + sealed
    if len(bundle) > MAX_BUNDLE_BYTES:
        raise ValueError(f"bundles are at most {MAX_BUNDLE_BYTES} bytes")
    return bundle


def open_bundle(bundle: bytes, *, key: bytes, capability: Capability) -> dict[str, str]:
    """The secrets in ``bundle``; broker side only. Raises BundleRefused for anything but our own bundle."""
    if not isinstance(bundle, bytes) or len(bundle) > MAX_BUNDLE_BYTES:
        raise BundleRefused("the bundle is not bytes of a plausible size")
    if not bundle.startswith(MAGIC) or len(bundle) < len(MAGIC) + NONCE_BYTES + 16:
        raise BundleRefused("not a ContainAI bundle")
    nonce = bundle[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(
            nonce, bundle[len(MAGIC) + NONCE_BYTES :], bundle_aad(capability)
        )
    except InvalidTag:
        raise BundleRefused(
            "the bundle does not open for this capability (changed, or another capability's bundle)"
        ) from None
    secrets = json.loads(plaintext)
    # Authenticated, so this is ours; still check it is what the capability says before handing it out.
    if (
        not isinstance(secrets, dict)
        or sorted(secrets) != list(capability.names)
        or not all(isinstance(v, str) for v in secrets.values())
    ):
        raise BundleRefused("the bundle's contents do not match its capability")
    return secrets


def _canonical(data: Mapping[str, object]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
