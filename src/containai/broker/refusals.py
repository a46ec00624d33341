"""How many refusal lines the audit takes: a token bucket per kind of refusal, the rest counted.

Anyone who can reach a broker socket can be refused, as often as they can connect, and every refusal
used to be an fsync'd audit line: a loop in the container could fill the host's disk. Each kind of
refusal (the operation and the reason) may write ``burst`` lines at once and then one per
``1 / per_second`` seconds; refusals over that are counted, and the count goes into one ``suppressed``
line written before the next refusal of that kind that is let through, or when the broker closes.
Allowed issues, redemptions and revocations are never limited: only refusals go through here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_BURST = 20
DEFAULT_PER_SECOND = 0.1  # after the burst, one line per kind of refusal every ten seconds

Kind = tuple[str, str]
"""A kind of refusal: the operation (or ``connect``) and the reason."""


@dataclass(frozen=True)
class Suppressed:
    """Refusals of one kind that were counted instead of written, and when the first and last were."""

    kind: Kind
    count: int
    first: float
    last: float


@dataclass
class _Bucket:
    tokens: float
    updated: float
    suppressed: int = 0
    first: float = 0.0
    last: float = 0.0


class RefusalLimiter:
    """Thread-safe. ``admit`` says whether a refusal gets its own line, and hands over what was held."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        burst: int = DEFAULT_BURST,
        per_second: float = DEFAULT_PER_SECOND,
    ) -> None:
        if burst < 1 or per_second <= 0:
            raise ValueError("a refusal limit needs a burst of at least 1 and a positive rate")
        self._clock = clock
        self._burst = burst
        self._per_second = per_second
        self._lock = threading.Lock()
        self._buckets: dict[Kind, _Bucket] = {}

    def admit(self, kind: Kind) -> tuple[bool, Suppressed | None]:
        """(write this refusal?, the refusals of this kind held back until now, to summarise first)."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.setdefault(kind, _Bucket(tokens=float(self._burst), updated=now))
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self._burst), bucket.tokens + elapsed * self._per_second)
            bucket.updated = now
            if bucket.tokens < 1.0:
                if not bucket.suppressed:
                    bucket.first = now
                bucket.suppressed += 1
                bucket.last = now
                return False, None
            bucket.tokens -= 1.0
            return True, self._take(kind, bucket)

    def drain(self) -> list[Suppressed]:
        """Every count still held, cleared: for the summary lines written when the broker closes."""
        with self._lock:
            held = [self._take(kind, bucket) for kind, bucket in sorted(self._buckets.items())]
        return [summary for summary in held if summary is not None]

    @staticmethod
    def _take(kind: Kind, bucket: _Bucket) -> Suppressed | None:
        if not bucket.suppressed:
            return None
        summary = Suppressed(kind, bucket.suppressed, bucket.first, bucket.last)
        bucket.suppressed = 0
        return summary
