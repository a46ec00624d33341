"""Hand-built git packs, for the pack scanner's tests and the gate's delta-bomb tests.

Standard library only: the engine test copies this file into a session, where the "agent" runs it
with the image's python3 to plant a crafted pack in its own repository.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

COMMIT, TREE, BLOB, TAG, OFS_DELTA, REF_DELTA = 1, 2, 3, 4, 6, 7


def varint(value: int) -> bytes:
    """A delta header's size: 7 bits a byte, least significant first."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def object_header(kind: int, size: int) -> bytes:
    out = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def offset_encoding(distance: int) -> bytes:
    """OFS_DELTA's distance back to its base (git's encoding: each byte after the first adds one)."""
    out = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        out.insert(0, 0x80 | (distance & 0x7F))
        distance >>= 7
    return bytes(out)


def copy_all(base_size: int, result_size: int) -> bytes:
    """A delta that builds ``result_size`` bytes by copying the whole base again and again."""
    out = bytearray(varint(base_size) + varint(result_size))
    left = result_size
    while left:
        n = min(base_size, left, 0xFFFFFF)
        # copy: offset 0 (no offset bytes), size in up to three bytes
        out += bytes([0x80 | 0x10 | 0x20 | 0x40, n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF])
        left -= n
    return bytes(out)


def entry(kind: int, data: bytes, *, declared: int | None = None, prefix: bytes = b"") -> bytes:
    """One packed object: header (with ``declared`` as its size, when lying), ``prefix``, zlib data."""
    size = len(data) if declared is None else declared
    return object_header(kind, size) + prefix + zlib.compress(data)


def pack(*entries: bytes, count: int | None = None, object_format: str = "sha1") -> bytes:
    body = b"PACK" + struct.pack(">II", 2, len(entries) if count is None else count) + b"".join(entries)
    return body + hashlib.new(object_format, body).digest()


def object_id(kind: str, data: bytes, object_format: str = "sha1") -> bytes:
    return hashlib.new(object_format, f"{kind} {len(data)}\0".encode() + data).digest()


def delta_bomb(result_size: int, *, base_size: int = 1 << 20, ofs: bool = True) -> bytes:
    """A pack of a blob and a delta on it that would build ``result_size`` bytes: a few KiB in all."""
    base = b"\0" * base_size
    first = entry(BLOB, base)
    delta = copy_all(base_size, result_size)
    if ofs:
        second = entry(OFS_DELTA, delta, prefix=offset_encoding(len(first)))
    else:
        second = entry(REF_DELTA, delta, prefix=object_id("blob", base))
    return pack(first, second)
