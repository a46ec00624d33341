"""A bundle's pack, read as untrusted data before host git sees it.

``scan_pack`` walks the pack stream (header, then each object's type and size, then its zlib data)
and refuses it when an object, or what a delta would build, is larger than the gate allows. It is
what stops a few kilobytes of delta from asking ``index-pack`` for gigabytes of memory:

    PACK <version> <count>
    object: type+size varint ─┬─ commit, tree, blob, tag: the size is the object's
                              ├─ OFS_DELTA: + base offset varint ─┐ the delta data starts with two
                              └─ REF_DELTA: + base object id ─────┘ varints: base size, result size
            zlib stream (inflated in bounded chunks, never whole; inflating more than it declared is refused)
    trailer: the hash of everything before it

Only the start of a delta (its two sizes) is inflated before the decision; the rest of every object
is inflated in chunks of ``_CHUNK`` bytes and thrown away, only to find where the next one starts.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["PackRefused", "PackSummary", "PackTooLarge", "scan_pack"]

_CHUNK = 64 * 1024
_TYPES = {1: "commit", 2: "tree", 3: "blob", 4: "tag", 6: "OFS_DELTA", 7: "REF_DELTA"}
_OFS_DELTA, _REF_DELTA = 6, 7
_HASHES = {"sha1": 20, "sha256": 32}
# A size varint longer than this is not a size any git writes (64 bits take 10 groups of 7).
_MAX_VARINT_BYTES = 10
# Two delta-header varints at most.
_DELTA_HEADER = 2 * _MAX_VARINT_BYTES


class PackRefused(ValueError):
    """The pack is malformed or over a limit; the message is one line, for the gate's reasons."""


class PackTooLarge(PackRefused):
    """An object, or what a delta would build, is larger than the limit."""


@dataclass(frozen=True)
class PackSummary:
    objects: int
    deltas: int
    largest: int  # the largest declared object or delta result, in bytes


class _Stream:
    """The pack's bytes in order, with what was consumed hashed (for the trailer) and counted."""

    def __init__(self, stream: BinaryIO, object_format: str) -> None:
        self._stream = stream
        self._buffer = b""
        self._hash = hashlib.new(object_format)
        self.offset = 0

    def peek(self) -> bytes:
        """Unconsumed bytes (at least one), read from the file when none are buffered; b"" at the end."""
        if not self._buffer:
            self._buffer = self._stream.read(_CHUNK)
        return self._buffer

    def consume(self, count: int) -> None:
        self._hash.update(self._buffer[:count])
        self._buffer = self._buffer[count:]
        self.offset += count

    def take(self, count: int, what: str) -> bytes:
        taken = b""
        while len(taken) < count:
            available = self.peek()
            if not available:
                raise PackRefused(f"the pack is truncated in {what} at byte {self.offset}")
            piece = available[: count - len(taken)]
            self.consume(len(piece))
            taken += piece
        return taken

    def digest(self) -> bytes:
        return self._hash.digest()

    def rest(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of what is left, unhashed (the trailer, and anything after it)."""
        data = b""
        while len(data) <= limit and (more := self.peek()):
            data += more
            self._buffer = b""
        return data


def scan_pack(stream: BinaryIO, *, max_object_bytes: int, object_format: str = "sha1") -> PackSummary:
    """Read a pack from ``stream`` (positioned at its ``PACK`` signature) to its end.

    Raises PackRefused when it is malformed, when an object declares more than ``max_object_bytes``,
    when a delta would build an object larger than that, or when an object inflates to more (or
    fewer) bytes than it declares. The stream is left at its end.
    """
    if object_format not in _HASHES:
        raise ValueError(f"unknown object format {object_format!r}")
    pack = _Stream(stream, object_format)
    header = pack.take(12, "the pack header")
    signature, version, count = header[:4], *struct.unpack(">II", header[4:])
    if signature != b"PACK":
        raise PackRefused("the pack has no PACK signature")
    if version not in (2, 3):
        raise PackRefused(f"the pack has unsupported version {version}")
    deltas = largest = 0
    for index in range(count):
        start = pack.offset
        kind, size = _object_header(pack)
        name = _TYPES.get(kind)
        where = f"pack object {index + 1} of {count} ({name or 'unknown type'} at byte {start})"
        if name is None:
            raise PackRefused(f"{where}: type {kind} is not a git object type")
        if size > max_object_bytes:
            raise PackTooLarge(f"{where}: declares {size} bytes, over the {max_object_bytes}-byte blob limit")
        if kind == _OFS_DELTA:
            _base_offset(pack, start, where)
        elif kind == _REF_DELTA:
            pack.take(_HASHES[object_format], f"{where}'s base id")
        result = _inflate(pack, size, where, delta=kind in (_OFS_DELTA, _REF_DELTA), limit=max_object_bytes)
        if kind in (_OFS_DELTA, _REF_DELTA):
            deltas += 1
        largest = max(largest, size, result)
    expected = pack.digest()
    trailer = pack.rest(len(expected))
    if len(trailer) < len(expected):
        raise PackRefused("the pack is truncated in its trailing checksum")
    if len(trailer) > len(expected):
        raise PackRefused(f"the pack has data after its {count} objects")
    if trailer != expected:
        raise PackRefused("the pack's trailing checksum does not match its content")
    return PackSummary(objects=count, deltas=deltas, largest=largest)


def _object_header(pack: _Stream) -> tuple[int, int]:
    """An object's type and inflated size: 1 bit more, 3 bits type, 4 bits size, then 7 bits a byte."""
    byte = pack.take(1, "an object header")[0]
    kind = (byte >> 4) & 0x7
    size = byte & 0x0F
    shift = 4
    for _ in range(_MAX_VARINT_BYTES):
        if not byte & 0x80:
            return kind, size
        byte = pack.take(1, "an object header")[0]
        size |= (byte & 0x7F) << shift
        shift += 7
    raise PackRefused(f"an object header at byte {pack.offset} is longer than any size git writes")


def _base_offset(pack: _Stream, start: int, where: str) -> None:
    """OFS_DELTA's base: a distance back from ``start``, in git's "offset encoding" (each more byte +1)."""
    byte = pack.take(1, f"{where}'s base offset")[0]
    distance = byte & 0x7F
    for _ in range(_MAX_VARINT_BYTES):
        if not byte & 0x80:
            break
        byte = pack.take(1, f"{where}'s base offset")[0]
        distance = ((distance + 1) << 7) | (byte & 0x7F)
    else:
        raise PackRefused(f"{where}: its base offset is longer than any git writes")
    if distance == 0 or distance > start - 12:
        raise PackRefused(f"{where}: its base offset points outside the pack")


def _delta_sizes(head: bytes) -> tuple[int, int] | None:
    """(base size, result size) from the start of a delta; None while more bytes are needed."""
    sizes = []
    pos = 0
    for _ in range(2):
        value = shift = 0
        while True:
            if pos >= len(head):
                return None
            byte = head[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift >= 7 * _MAX_VARINT_BYTES:
                raise PackRefused("a delta's size header is longer than any git writes")
        sizes.append(value)
    return sizes[0], sizes[1]


def _inflate(pack: _Stream, declared: int, where: str, *, delta: bool, limit: int) -> int:
    """Inflate one object's zlib stream in bounded chunks; the delta's result size (else ``declared``).

    For a delta, the first ``_DELTA_HEADER`` bytes are inflated and checked before anything else is.
    """
    inflater = zlib.decompressobj()
    inflated = 0
    head = b""
    result = declared
    checked = not delta
    while not inflater.eof:
        available = pack.peek()
        if not available:
            raise PackRefused(f"{where}: the pack is truncated inside its data")
        # Until the delta's sizes are read, ask for no more than its header.
        want = _CHUNK if checked else _DELTA_HEADER - len(head)
        try:
            out = inflater.decompress(available, want)
        except zlib.error as exc:
            raise PackRefused(f"{where}: its data is not valid zlib ({exc})") from None
        # At the end of the stream, zlib reports what follows it as both unused and unconsumed.
        left = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        used = len(available) - len(left)
        if used == 0 and not out and not inflater.eof:  # zlib made no progress: never loop on it
            raise PackRefused(f"{where}: its data is not valid zlib (no progress)")
        pack.consume(used)
        inflated += len(out)
        if inflated > declared:
            raise PackRefused(f"{where}: inflates to more than the {declared} bytes it declares")
        if not checked:
            head += out
            sizes = _delta_sizes(head)
            if sizes is None and (len(head) >= _DELTA_HEADER or inflater.eof):
                raise PackRefused(f"{where}: its delta has no complete size header")
            if sizes is not None:
                checked = True
                result = sizes[1]
                if result > limit:
                    raise PackTooLarge(
                        f"{where}: its delta would build an object of {result} bytes, "
                        f"over the {limit}-byte blob limit"
                    )
    if inflated != declared:
        raise PackRefused(f"{where}: inflates to {inflated} bytes, not the {declared} it declares")
    return result
