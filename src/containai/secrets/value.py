"""The ``Secret`` value: a string that will not show itself.

``repr``, ``str`` and f-strings give ``Secret('***')``, so a log line, an exception message or a traceback
cannot leak one. The value comes out only through ``reveal()``, which is easy to grep for.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, NoReturn

MASK = "Secret('***')"


class Secret:
    """A secret string. Immutable, unhashable, unpicklable; compared in constant time."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The value itself; call this only where it must leave ContainAI (the store, the broker's reply)."""
        return self._value

    def fingerprint(self, key: bytes) -> str:
        """A keyed fingerprint (HMAC-SHA256, 16 hex digits) to correlate a value in logs without showing it.

        Keyed on purpose: a bare hash of a short or guessable secret can be reversed by trying candidates.
        """
        if len(key) < 16:
            raise ValueError("a fingerprint key must be at least 16 bytes")
        return hmac.new(key, self._value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    # Unhashable: a hash is a cheap oracle for the value and would let secrets become dict keys or set
    # members that end up in debug output. (Defining __eq__ already does this at run time; mypy needs it said.)
    __hash__ = None  # type: ignore[assignment]

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    # A pickle is plain bytes on disk or on a wire: refuse rather than write the value out unseen.
    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("a Secret cannot be pickled; call reveal() where the value must leave on purpose")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled; call reveal() where the value must leave on purpose")

    def __getstate__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled; call reveal() where the value must leave on purpose")

    # Immutable, so a copy is the same object (copy would otherwise go through __reduce_ex__ and fail).
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self
