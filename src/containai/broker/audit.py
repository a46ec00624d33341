"""The broker's audit: one JSON line per issue, redeem, refusal and revocation, fail closed.

Lines name sessions, containers, consumers, capability ids and secret names, and identify values
only by keyed fingerprints (HMAC-SHA256 under an audit key the broker holds), never by the value or a
bare hash: a bare SHA-256 of a short token or password can be brute-forced from the log.

Each line is written, flushed and fsync'd before the operation it records returns; if that fails,
``record`` raises AuditUnavailable and the broker refuses (Vault: "if all audit devices are blocked,
Vault will not respond").

The lines form a keyed chain, so that an edit, a deleted line, a reordering or a cut tail shows
(``verify``). Each line carries ``seq`` (1, 2, 3, ... across broker restarts), ``prev`` (the line
before's ``mac``) and ``mac``, the HMAC-SHA256 of the line without its mac under the *chain key*: 32
random bytes kept beside the audit on the host (0600) and mounted nowhere, so that whoever can
rewrite the log but not read the key cannot forge a line (an unkeyed hash chain anyone can recompute).
After each line the broker also rewrites a *checkpoint* file (0600) with the last line's seq and mac,
itself MACed: a log that ends before the checkpoint was cut. A broker that stops cleanly writes a
``close`` line last, so a finished session's log with no close line was cut too.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from containai.errors import AuditUnavailable

GENESIS = "0" * 64
CHAIN_KEY_BYTES = 32
CLOSE = "close"
SUPPRESSED = "suppressed"
_FINGERPRINT_HEX = 32  # 128 bits: enough to correlate, too short to matter if the key ever leaked
_TAIL_BYTES = 64 * 1024


def chain_key_path(audit: Path) -> Path:
    """Where the chain key of ``audit`` is kept: beside it, on the host only."""
    return audit.with_name(audit.name.removesuffix(".jsonl") + ".chain-key")


def checkpoint_path(audit: Path) -> Path:
    return audit.with_name(audit.name.removesuffix(".jsonl") + ".checkpoint")


class AuditLog:
    """An append-only JSONL file. Thread-safe: lines never interleave and the chain stays linear."""

    def __init__(self, path: Path, *, key: bytes, clock: Callable[[], float]) -> None:
        if len(key) < 32:
            raise ValueError("audit keys are at least 32 random bytes")
        self.path = path
        self._key = key
        self._clock = clock
        self._lock = threading.Lock()
        # Open once now, so a broker that could never audit fails at start rather than at first use.
        fd = self._open()
        try:
            # A device or FIFO would accept lines and keep none (or never end when read back).
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise AuditUnavailable(path, "not a regular file")
            self._chain_key = load_chain_key(chain_key_path(path), create=True)
            self._seq, self._prev = _last_link(path)
        except OSError as exc:
            raise AuditUnavailable(path, exc.strerror or str(exc)) from None
        finally:
            os.close(fd)

    def fingerprint(self, value: str | bytes) -> str:
        raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        return "hmac-sha256:" + hmac.new(self._key, raw, hashlib.sha256).hexdigest()[:_FINGERPRINT_HEX]

    def fingerprints(self, values: Mapping[str, str]) -> dict[str, str]:
        return {name: self.fingerprint(value) for name, value in sorted(values.items())}

    def record(self, event: str, **fields: object) -> None:
        """Append one line and fsync it, then the checkpoint; raise AuditUnavailable if any of that fails."""
        with self._lock:
            now = self._clock()
            entry: dict[str, object] = {
                "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
                "event": event,
                **fields,
                "seq": self._seq + 1,
                "prev": self._prev,
            }
            entry["mac"] = line_mac(self._chain_key, entry)
            line = _canonical(entry)
            fd = self._open()
            try:
                _write_all(fd, line + b"\n")
                os.fsync(fd)
            except OSError as exc:
                raise AuditUnavailable(self.path, exc.strerror or str(exc)) from None
            finally:
                os.close(fd)
            self._seq += 1
            self._prev = str(entry["mac"])
            try:
                _write_checkpoint(checkpoint_path(self.path), self._chain_key, self._seq, self._prev)
            except OSError as exc:
                raise AuditUnavailable(checkpoint_path(self.path), exc.strerror or str(exc)) from None

    def close(self, **fields: object) -> None:
        """The last line of a broker that stops cleanly: without it, a finished log was cut."""
        self.record(CLOSE, outcome="info", **fields)

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            # O_APPEND: concurrent writers (another broker, a shell) cannot overwrite our lines.
            # O_NOFOLLOW: a planted symlink cannot redirect the audit.
            return os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise AuditUnavailable(self.path, exc.strerror or str(exc)) from None


# -- the chain ---------------------------------------------------------------------------------------


def load_chain_key(path: Path, *, create: bool = False) -> bytes:
    """The chain key at ``path``; with ``create``, a new random one (0600) if there is none yet."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if not create:
            raise
        key = secrets.token_bytes(CHAIN_KEY_BYTES)
        # O_EXCL: two brokers starting at once cannot each write a key and keep the other's lines.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return load_chain_key(path)
        try:
            _write_all(fd, key.hex().encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    with os.fdopen(fd, "rb") as f:
        text = f.read(CHAIN_KEY_BYTES * 2 + 1)
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != CHAIN_KEY_BYTES:
        raise OSError(f"{path} is not a chain key")
    return key


def line_mac(key: bytes, entry: Mapping[str, object]) -> str:
    """The MAC of a line: over its canonical JSON without the ``mac`` field."""
    body = {name: value for name, value in entry.items() if name != "mac"}
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def _canonical(entry: Mapping[str, object]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _checkpoint_mac(key: bytes, seq: int, mac: str) -> str:
    return hmac.new(key, f"checkpoint:{seq}:{mac}".encode("ascii"), hashlib.sha256).hexdigest()


def _write_checkpoint(path: Path, key: bytes, seq: int, mac: str) -> None:
    # Written aside and renamed over: a crash leaves the old checkpoint or the new one, never half.
    body = _canonical({"seq": seq, "mac": mac, "check": _checkpoint_mac(key, seq, mac)})
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        _write_all(fd, body + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


Tamper = Literal["edited", "deleted", "reordered", "truncated", "unkeyed"]


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: intact (``broken`` is None) with ``lines`` lines, or where it broke and how."""

    lines: int
    closed: bool
    broken: Tamper | None = None
    line: int | None = None  # the line (1-based) where it broke; None for a problem of the whole log
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.broken is None

    def render(self) -> str:
        if self.ok:
            state = "closed" if self.closed else "open (the broker still runs)"
            return f"OK: {self.lines} lines, chain intact, {state}"
        where = f"line {self.line}" if self.line is not None else "the log"
        return f"BROKEN at {where}: {self.broken}: {self.detail}"

    def as_json(self) -> dict[str, object]:
        return {
            "schema": 1,
            "ok": self.ok,
            "lines": self.lines,
            "closed": self.closed,
            "broken": self.broken,
            "line": self.line,
            "detail": self.detail,
        }


def verify(audit: Path, *, finished: bool) -> Verdict:
    """Check every line's mac, seq and prev link, the checkpoint and, if ``finished``, the close line.

    The checkpoint is read before the log: a broker still running may add lines in between, which is
    fine (they carry their own macs); the log must reach at least as far as the checkpoint.
    """
    try:
        key = load_chain_key(chain_key_path(audit))
    except FileNotFoundError:
        return Verdict(0, False, "unkeyed", None, f"no chain key at {chain_key_path(audit)}")
    checkpoint = _read_checkpoint(checkpoint_path(audit))
    with audit.open("rb") as f:
        raw_lines = f.read().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    elif raw_lines:
        # The last line has no newline: the broker writes whole lines, so it was cut or appended to.
        return Verdict(len(raw_lines), False, "truncated", len(raw_lines), "the last line is cut off")
    return _verify_lines(key, raw_lines, checkpoint, finished=finished)


def _read_checkpoint(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _verify_lines(
    key: bytes, raw_lines: Sequence[bytes], checkpoint: dict[str, Any] | None, *, finished: bool
) -> Verdict:
    count = len(raw_lines)
    entries = [_parse(raw) for raw in raw_lines]
    seqs = [entry.get("seq") if entry is not None else None for entry in entries]
    prev = GENESIS
    for number, (raw, entry) in enumerate(zip(raw_lines, entries, strict=True), start=1):

        def broken(kind: Tamper, detail: str, at: int = number) -> Verdict:
            return Verdict(count, False, kind, at, detail)

        if entry is None:
            return broken("edited", "not a JSON object")
        if "mac" not in entry:
            return broken("unkeyed", "a line without a mac (written by an older ContainAI, or by hand)")
        if _canonical(entry) != raw or not hmac.compare_digest(str(entry["mac"]), line_mac(key, entry)):
            return broken("edited", "its mac does not match its content")
        seq = entry.get("seq")
        if seq != number:
            if number in seqs[number:]:
                return broken("reordered", f"line seq {number} comes later in the log")
            if isinstance(seq, int) and seq > number:
                gone = f"line {number}" if seq == number + 1 else f"lines {number} to {seq - 1}"
                return broken("deleted", f"{gone} of the chain are missing here")
            return broken("reordered", f"it is seq {seq}, out of place")
        if entry.get("prev") != prev:
            return broken("reordered", "its prev does not link to the line before")
        prev = str(entry["mac"])
    closed = bool(entries) and entries[-1] is not None and entries[-1].get("event") == CLOSE
    if checkpoint is None:
        if count:
            return Verdict(count, closed, "truncated", None, "the checkpoint file is missing")
        return Verdict(0, False, None if not finished else "truncated", None, "" if not finished else "empty")
    seq, mac = checkpoint.get("seq"), checkpoint.get("mac")
    if (
        not isinstance(seq, int)
        or not isinstance(mac, str)
        or not hmac.compare_digest(str(checkpoint.get("check")), _checkpoint_mac(key, seq, mac))
    ):
        return Verdict(count, closed, "edited", None, "the checkpoint does not verify")
    if seq > count:
        return Verdict(
            count, closed, "truncated", count + 1, f"the log ends at line {count}, its checkpoint at {seq}"
        )
    entry = entries[seq - 1] if seq >= 1 else None
    if entry is None or entry.get("mac") != mac:
        return Verdict(count, closed, "edited", seq, "it is not the line the checkpoint recorded")
    if finished and not closed:
        return Verdict(
            count, closed, "truncated", count + 1, "the broker has stopped but the log has no close line"
        )
    return Verdict(count, closed)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _last_link(path: Path) -> tuple[int, str]:
    # A broker restarted on the same audit continues its chain (seq and prev) instead of starting anew.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
    lines = [line for line in tail.split(b"\n") if line]
    if not lines:
        return 0, GENESIS
    last = _parse(lines[-1]) or {}
    seq, mac = last.get("seq"), last.get("mac")
    if isinstance(seq, int) and isinstance(mac, str):
        return seq, mac
    # A log from an older, unkeyed ContainAI: go on after it; verify names its lines as unkeyed.
    return len(lines), GENESIS
