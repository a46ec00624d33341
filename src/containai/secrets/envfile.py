"""Env files of secrets: ``parse_env_file`` reads them, ``render_env_file`` writes ContainAI's own.

The format, one entry a line:

    # a comment
    NAME=value                 unquoted: surrounding blanks dropped; ` #` starts a comment
    export NAME=value          the shell's `export ` prefix is accepted and ignored
    NAME='literal $ \\ "'       single quotes: everything literal, up to the next '
    NAME="a\\nb \\" \\\\"          double quotes: \\n \\r \\t \\" \\\\ are escapes; any other \\ is kept

A quoted value may span lines. Names match ``[A-Za-z_][A-Za-z0-9_]*``; a later line wins over an
earlier one with the same name. CRLF line ends and a UTF-8 byte-order mark are accepted.

Errors name the file and line and never quote the line: a malformed line may well be a bare secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from containai.errors import ConfigError
from containai.secrets.value import Secret

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_UNESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"}
_BLANKS = " \t"
_FORMAT_HINT = (
    "each line is NAME=VALUE, `export NAME=VALUE` or a # comment; quote a value that holds ' #' "
    "or leading blanks (the line is not shown, as it may hold a secret)"
)

STORE_HEADER = (
    "# ContainAI secret store, written by `containai secrets set`: change it with that command.\n"
    '# Values are double-quoted; \\n \\r \\" \\\\ are escapes.\n'
)


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def _error(source: str, line: int, reason: str) -> ConfigError:
    return ConfigError(f"{source}, line {line}: {reason}", hint=_FORMAT_HINT)


def _skip_blanks(text: str, i: int, end: int) -> int:
    while i < end and text[i] in _BLANKS:
        i += 1
    return i


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end == -1 else end


def _quoted(text: str, i: int, quote: str, source: str, line: int) -> tuple[str, int, int]:
    """The value of a quoted string whose opening quote is just before ``i``.

    Returns the value, the index after the closing quote, and the line number there.
    """
    out: list[str] = []
    start_line = line
    while i < len(text):
        char = text[i]
        if char == quote:
            return "".join(out), i + 1, line
        if quote == '"' and char == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        if char == "\n":
            line += 1
        out.append(char)
        i += 1
    raise _error(source, start_line, f"the {quote} quote opened here is never closed")


def parse_env_file(text: str, source: str) -> dict[str, Secret]:
    """The secrets in an env file's ``text``; ``source`` names the file in errors. Raises ConfigError."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    values: dict[str, Secret] = {}
    pos, line = 0, 1
    while pos < len(text):
        end = _line_end(text, pos)
        i = _skip_blanks(text, pos, end)
        if i < end and text[i] != "#":
            if text.startswith("export", i) and i + 6 < end and text[i + 6] in _BLANKS:
                i = _skip_blanks(text, i + 6, end)
            equals = text.find("=", i, end)
            if equals == -1:
                raise _error(source, line, "expected NAME=VALUE")
            name = text[i:equals].rstrip(_BLANKS)
            if not is_valid_name(name):
                raise _error(
                    source,
                    line,
                    "the name before '=' is not a variable name (letters, digits and _, not starting with a digit)",
                )
            start = _skip_blanks(text, equals + 1, end)
            if start < end and text[start] in "'\"":
                value, after, closing_line = _quoted(text, start + 1, text[start], source, line)
                end = _line_end(text, after)
                rest = text[after:end].strip(_BLANKS)
                if rest and not rest.startswith("#"):
                    raise _error(source, closing_line, "unexpected text after the closing quote")
                line = closing_line
            else:
                raw = text[equals + 1 : end]
                comment = re.search(r"[ \t]#", raw)
                value = (raw[: comment.start()] if comment else raw).strip(_BLANKS)
            values[name] = Secret(value)
        pos = end + 1
        line += 1
    return values


def quote_value(value: str) -> str:
    """``value`` double-quoted so that ``parse_env_file`` reads back exactly the same string."""
    return '"' + "".join(_UNESCAPES.get(char, char) for char in value) + '"'


def render_env_file(values: Mapping[str, Secret], header: str = STORE_HEADER) -> str:
    """An env file holding ``values`` (sorted by name), every value quoted; no I/O."""
    lines = [header.rstrip("\n")] if header else []
    for name in sorted(values):
        if not is_valid_name(name):
            raise ValueError("not a valid secret name")  # callers check names first; this guards the format
        lines.append(f"{name}={quote_value(values[name].reveal())}")
    return "\n".join(lines) + "\n"
