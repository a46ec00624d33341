"""Text from inside a session (git's output, a program's error) made safe to show on a terminal.

The agent controls what its container prints. Shown as it is, an escape sequence could rewrite the
user's screen, set the terminal's title or clipboard, or hide the lines around it. Every control and
format character is escaped (``\\x1b``, ``\\u202e``), and bytes that are not UTF-8 are shown as ``\\xNN``.
"""

from __future__ import annotations

import unicodedata

MAX_SHOWN = 500  # a line from the session is cut here: it is a hint, not a log


def printable(value: bytes | str, *, limit: int = MAX_SHOWN) -> str:
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    shown = "".join(out)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def terminal_safe(text: str) -> str:
    """A message about to be printed, made safe whatever it quotes: each control and format character
    but the line break and the tab is escaped, as ``printable`` would. Unlike ``printable``, nothing
    else changes (a backslash stays one, nothing is cut): it is the last guard, at the printing
    boundary, for text that parts of it may already have made printable."""
    if all(ch in "\n\t" or unicodedata.category(ch) not in _UNSAFE for ch in text):
        return text
    out = []
    for ch in text:
        if ch in "\n\t" or unicodedata.category(ch) not in _UNSAFE:
            out.append(ch)
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return "".join(out)


_UNSAFE = ("Cc", "Cf", "Zl", "Zp", "Cs")


def last_line(output: bytes | str) -> str:
    """The last non-blank line of a program's output, printable."""
    text = output.decode("utf-8", "surrogateescape") if isinstance(output, bytes) else output
    lines = [line for line in text.splitlines() if line.strip()]
    return printable(lines[-1]) if lines else ""


OUTPUT_TAIL_BYTES = 64 * 2**10


class OutputTail:
    """A program's output as an exec sink (``OutputSink``) that keeps only its last ``limit`` bytes:
    the agent decides how much its container prints, the host holds no more than this of it."""

    def __init__(
        self, limit: int = OUTPUT_TAIL_BYTES, *, streams: tuple[str, ...] = ("stdout", "stderr")
    ) -> None:
        self.limit = limit
        self.streams = streams
        self.seen = 0
        self._data = bytearray()

    def __call__(self, stream: str, data: bytes) -> None:
        if stream not in self.streams:
            return
        self.seen += len(data)
        self._data += data
        if len(self._data) > self.limit:
            del self._data[: len(self._data) - self.limit]

    @property
    def data(self) -> bytes:
        return bytes(self._data)
