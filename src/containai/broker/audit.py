"""The broker's audit: one JSON line per issue, redeem, refusal and revocation, fail closed.

Lines name sessions, containers, consumers, capability ids and secret names, and identify values
only by keyed fingerprints (HMAC-SHA256 under an audit key the broker holds), never by the value or a
bare hash: a bare SHA-256 of a short token or password can be brute-forced from the log.

Each line is written, flushed and fsync'd before the operation it records returns; if that fails,
``record`` raises AuditUnavailable and the broker refuses (Vault: "if all audit devices are blocked,
Vault will not respond"). Each line also carries ``prev``, the SHA-256 of the line before it, so that
a deleted or edited line shows (``verify_chain``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from containai.errors import AuditUnavailable, BrokerError

GENESIS = "0" * 64
_FINGERPRINT_HEX = 32  # 128 bits: enough to correlate, too short to matter if the key ever leaked
_TAIL_BYTES = 64 * 1024


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
            self._prev = _last_line_hash(path)
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
        """Append one line and fsync it; raise AuditUnavailable if any of that fails."""
        with self._lock:
            now = self._clock()
            entry: dict[str, object] = {
                "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
                "event": event,
                **fields,
                "prev": self._prev,
            }
            line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
            fd = self._open()
            try:
                _write_all(fd, line + b"\n")
                os.fsync(fd)
            except OSError as exc:
                raise AuditUnavailable(self.path, exc.strerror or str(exc)) from None
            finally:
                os.close(fd)
            self._prev = hashlib.sha256(line).hexdigest()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            # O_APPEND: concurrent writers (another broker, a shell) cannot overwrite our lines.
            # O_NOFOLLOW: a planted symlink cannot redirect the audit.
            return os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise AuditUnavailable(self.path, exc.strerror or str(exc)) from None


def verify_chain(lines: Iterable[bytes]) -> int:
    """The number of lines, if each one's ``prev`` is the hash of the one before; else BrokerError."""
    prev = GENESIS
    count = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\n")
        try:
            entry = json.loads(line)
        except ValueError:
            raise BrokerError(f"audit line {number} is not JSON") from None
        if not isinstance(entry, dict) or entry.get("prev") != prev:
            raise BrokerError(f"audit chain broken at line {number}")
        prev = hashlib.sha256(line).hexdigest()
        count = number
    return count


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _last_line_hash(path: Path) -> str:
    # A broker restarted on the same audit continues its chain instead of starting a second one.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
    lines = [line for line in tail.split(b"\n") if line]
    return hashlib.sha256(lines[-1]).hexdigest() if lines else GENESIS
