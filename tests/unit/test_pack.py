"""The pack scanner on hand-built packs, and on packs real git writes."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from containai.workspace.pack import PackRefused, PackSummary, scan_pack

from ..packs import (
    BLOB,
    COMMIT,
    OFS_DELTA,
    REF_DELTA,
    copy_all,
    delta_bomb,
    entry,
    object_header,
    object_id,
    offset_encoding,
    pack,
    varint,
)

LIMIT = 1 << 20
GIB = 1 << 30


def scan(data: bytes, limit: int = LIMIT, object_format: str = "sha1") -> PackSummary:
    return scan_pack(io.BytesIO(data), max_object_bytes=limit, object_format=object_format)


def refused(data: bytes, limit: int = LIMIT) -> str:
    with pytest.raises(PackRefused) as caught:
        scan(data, limit)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_plain_objects_pass() -> None:
    summary = scan(pack(entry(BLOB, b"hello\n"), entry(COMMIT, b"tree 0\n"), entry(BLOB, b"")))
    assert summary == PackSummary(objects=3, deltas=0, largest=len(b"tree 0\n"))


def test_an_empty_pack_passes() -> None:
    assert scan(pack()) == PackSummary(objects=0, deltas=0, largest=0)


def test_sha256_packs_have_a_longer_trailer_and_base_ids() -> None:
    base = b"x" * 100
    data = pack(
        entry(BLOB, base),
        entry(REF_DELTA, copy_all(100, 300), prefix=object_id("blob", base, "sha256")),
        object_format="sha256",
    )
    assert scan(data, object_format="sha256") == PackSummary(objects=2, deltas=1, largest=300)
    refused(data)  # read as sha1, the base id and the trailer are the wrong length


def test_ofs_and_ref_deltas_within_the_limit_pass() -> None:
    assert scan(delta_bomb(LIMIT, base_size=1000)) == PackSummary(objects=2, deltas=1, largest=LIMIT)
    assert scan(delta_bomb(LIMIT, base_size=1000, ofs=False)).deltas == 1


@pytest.mark.parametrize("ofs", [True, False], ids=["ofs-delta", "ref-delta"])
def test_a_delta_that_would_build_gigabytes_is_refused_from_its_header(ofs: bool) -> None:
    bomb = delta_bomb(4 * GIB, ofs=ofs)
    assert len(bomb) < 64 * 1024  # a few KiB of pack
    message = refused(bomb)
    kind = "OFS_DELTA" if ofs else "REF_DELTA"
    at = 12 + len(entry(BLOB, b"\0" * (1 << 20)))
    assert message == (
        f"pack object 2 of 2 ({kind} at byte {at}): "
        f"its delta would build an object of {4 * GIB} bytes, over the {LIMIT}-byte blob limit"
    )


REAL_INFLATER = zlib.decompressobj


class CountingInflater:
    """zlib's inflater, counting what it hands out."""

    total = 0

    def __init__(self) -> None:
        self._inner = REAL_INFLATER()

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out = self._inner.decompress(data, max_length)
        CountingInflater.total += len(out)
        return out

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_a_delta_is_judged_from_its_header_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("containai.workspace.pack.zlib.decompressobj", CountingInflater)
    base = entry(BLOB, b"0123456789")
    # 8 MiB of delta data (within the limit) that says it builds 8 GiB: only its start is inflated.
    delta = varint(10) + varint(8 * GIB) + b"\x0a" * (8 << 20)
    bomb = pack(base, entry(OFS_DELTA, delta, prefix=offset_encoding(len(base))))
    assert "would build an object of 8589934592 bytes" in refused(bomb, limit=16 << 20)
    assert CountingInflater.total <= 10 + 20  # the base, and the delta's header


def test_a_declared_size_over_the_limit_is_refused_before_inflating() -> None:
    huge = object_header(BLOB, 5 * GIB) + b"not even zlib"
    assert refused(pack(huge)) == (
        f"pack object 1 of 1 (blob at byte 12): declares {5 * GIB} bytes, over the {LIMIT}-byte blob limit"
    )


def test_an_object_that_inflates_past_what_it_declares_is_refused() -> None:
    lying = entry(BLOB, b"\0" * (LIMIT * 4), declared=100)
    assert "inflates to more than the 100 bytes it declares" in refused(pack(lying))


def test_an_object_that_inflates_to_less_than_it_declares_is_refused() -> None:
    short = entry(BLOB, b"abc", declared=10)
    assert "inflates to 3 bytes, not the 10 it declares" in refused(pack(short))


def test_a_lying_delta_is_refused_like_any_object() -> None:
    base = entry(BLOB, b"0123456789")
    lying = entry(OFS_DELTA, copy_all(10, 1000), declared=3, prefix=offset_encoding(len(base)))
    assert "inflates to more than the 3 bytes it declares" in refused(pack(base, lying))


HEADER_OF_2 = b"PACK" + struct.pack(">II", 2, 2)
X = entry(BLOB, b"x")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "truncated in the pack header"),
        (b"PACK\0\0\0\x02\0\0", "truncated in the pack header"),
        (b"KCAP\0\0\0\x02\0\0\0\0" + b"\0" * 20, "no PACK signature"),
        (b"PACK\0\0\0\x04\0\0\0\0" + b"\0" * 20, "unsupported version 4"),
        (pack(entry(BLOB, b"hi"))[:-25], "truncated inside its data"),
        (HEADER_OF_2 + entry(BLOB, b"hi"), "truncated in an object header"),
        (pack(entry(BLOB, b"hi"))[:-3], "truncated in its trailing checksum"),
        (pack(entry(BLOB, b"hi")) + b"more", "data after its 1 objects"),
        (pack(entry(BLOB, b"hi"))[:-1] + b"\0", "checksum does not match"),
        (pack(object_header(5, 2) + zlib.compress(b"hi")), "type 5 is not a git object type"),
        (pack(object_header(BLOB, 2) + b"\x78\x9cgarbage"), "not valid zlib"),
        (pack(b"\xb0" + b"\xff" * 12), "longer than any size git writes"),
        (pack(entry(OFS_DELTA, copy_all(1, 1), prefix=offset_encoding(1))), "points outside the pack"),
        (HEADER_OF_2 + object_header(REF_DELTA, 3) + b"\x01" * 5, "truncated in pack object 1 of 2"),
        (pack(X, entry(OFS_DELTA, b"\x80\x80", prefix=offset_encoding(len(X)))), "no complete size header"),
    ],
    ids=[
        "empty",
        "short-header",
        "signature",
        "version",
        "truncated-data",
        "missing-object",
        "short-trailer",
        "trailing-data",
        "bad-checksum",
        "type-5",
        "bad-zlib",
        "endless-size",
        "base-before-pack",
        "ref-base-id-cut",
        "delta-header-cut",
    ],
)
def test_malformed_packs_are_refused(data: bytes, expected: str) -> None:
    assert expected in refused(data)


def git(repo: Path, *args: str, input_bytes: bytes | None = None) -> bytes:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], input=input_bytes, capture_output=True, check=True, env=env
    ).stdout


@pytest.mark.parametrize("offsets", [True, False], ids=["ofs-deltas", "ref-deltas"])
def test_packs_git_writes_pass(tmp_path: Path, offsets: bool) -> None:
    git(tmp_path, "init", "-q")
    text = b"".join(b"line %d of a file that changes a little each time\n" % n for n in range(2000))
    shas = [git(tmp_path, "hash-object", "-w", "--stdin", input_bytes=text + b"%d\n" % n) for n in range(5)]
    args = ["pack-objects", "--stdout", "--no-reuse-delta", *(["--delta-base-offset"] if offsets else [])]
    data = git(tmp_path, *args, input_bytes=b"".join(shas))
    summary = scan(data)
    assert summary.objects == 5
    assert summary.deltas >= 1
    assert summary.largest == len(text) + 2
