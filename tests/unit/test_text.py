"""Text from a session, made safe for the user's terminal."""

from __future__ import annotations

import pytest

from containai.text import last_line, printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"plain text", "plain text"),
        (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        (b"\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("tab\there\rback", "tab\\x09here\\x0dback"),
        ("\u202eevil\u2066", "\\u202eevil\\u2066"),  # bidi overrides
        ("\x9b31m", "\\x9b31m"),  # a C1 control sequence introducer
        ("line\u2028sep", "line\\u2028sep"),
        (b"\xff\xfe", "\\xff\\xfe"),  # bytes that are not UTF-8
        ("back\\slash", "back\\\\slash"),
    ],
)
def test_printable_escapes_every_control_and_format_character(raw: bytes | str, shown: str) -> None:
    assert printable(raw) == shown


def test_printable_cuts_long_text() -> None:
    assert printable("x" * 1000, limit=10) == "x" * 9 + "…"


def test_last_line_skips_blank_lines() -> None:
    assert last_line(b"first\n\x1b[2Jsecond\n\n  \n") == "\\x1b[2Jsecond"
    assert last_line(b"") == ""
