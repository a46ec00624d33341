"""The repository's git config as a session may see it: without the credentials people leave in it.

A remote URL often carries a token (``https://user:ghp_...@github.com/o/r.git``), CI checkouts leave an
``http.<url>.extraHeader`` with a bearer token, and a ``[credential]`` section can name a helper with
the password inline (``helper = "!echo password=..."``). The session sees this copy in place of the
real file, at ``/repo`` and, for an overlay workspace, at ``/workspace/.git/config``: URLs keep their
host and path but lose their user information, and the other two are left out.

Git's config syntax is line based (sections, ``key = value``, a backslash continuing a value), so the
rewrite is too: it never needs to understand a value, only where a line belongs.
"""

from __future__ import annotations

import re

# ``scheme://userinfo@``: everything between the scheme and the last ``@`` before the host.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s\"'@]*@")
_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9.-]+)")
_EXTRA_HEADER = re.compile(r"(?i)^\s*extraheader\s*(=|$)")


def strip_userinfo(text: str) -> str:
    """Every ``scheme://user:secret@host`` in ``text`` as ``scheme://host``."""
    return _USERINFO.sub(r"\1", text)


def render_safe_git_config(text: str) -> str:
    """``text`` (a git config file) with no URL user information, no extra headers, no credential section."""
    kept: list[str] = []
    in_credential = False
    dropping = False  # inside a dropped value that a trailing backslash continues
    for line in text.splitlines(keepends=True):
        if dropping:
            dropping = line.rstrip("\r\n").endswith("\\")
            continue
        section = _SECTION.match(line)
        if section:
            in_credential = section.group(1).lower() == "credential"
            if in_credential:
                continue
            # A one-line "[http] extraHeader = ..." puts a key on the header's own line.
            header_end = line.find("]")
            rest = line[header_end + 1 :] if header_end >= 0 else ""
            if _EXTRA_HEADER.match(rest.lstrip()):
                kept.append(line[: header_end + 1] + "\n")
                dropping = line.rstrip("\r\n").endswith("\\")
                continue
        elif in_credential or _EXTRA_HEADER.match(line):
            dropping = line.rstrip("\r\n").endswith("\\")
            continue
        kept.append(strip_userinfo(line))
    return "".join(kept)
