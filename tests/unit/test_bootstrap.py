from __future__ import annotations

from pathlib import Path

import pytest

from containai.errors import BootstrapError
from containai.images.bootstrap import (
    AptSource,
    parse_apt_sources,
    pick_mirror,
    read_host_sources,
    render_sources_list,
)

ONE_LINE = """\
# the main mirror
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main contrib
deb-src http://mirror.example/debian bookworm main
deb http://security.debian.org/debian-security bookworm-security main # trailing comment
#deb http://disabled.example/debian bookworm main
deb [ signed-by=/k.gpg ] http://spaced.example/debian bookworm-updates main
deb http://incomplete.example/debian
"""

DEB822 = """\
Types: deb deb-src
URIs: http://deb.example/debian http://backup.example/debian
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

# an old stanza, switched off
Types: deb
URIs: http://old.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src-only.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://security.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_one_line_sources() -> None:
    assert parse_apt_sources(ONE_LINE, deb822=False) == [
        AptSource("http://mirror.example/debian", ("bookworm",), ("main", "contrib")),
        AptSource("http://security.debian.org/debian-security", ("bookworm-security",), ("main",)),
        AptSource("http://spaced.example/debian", ("bookworm-updates",), ("main",)),
    ]


def test_deb822_sources() -> None:
    assert parse_apt_sources(DEB822, deb822=True) == [
        AptSource(
            "http://deb.example/debian", ("bookworm", "bookworm-updates"), ("main", "non-free-firmware")
        ),
        AptSource(
            "http://backup.example/debian", ("bookworm", "bookworm-updates"), ("main", "non-free-firmware")
        ),
        AptSource("http://security.debian.org/debian-security", ("bookworm-security",), ("main",)),
    ]


def test_deb822_continuation_lines_are_not_fields() -> None:
    text = "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\nComponents: main\nSigned-By:\n -----BEGIN PGP\n URIs: http://evil.example\n"
    assert [s.uri for s in parse_apt_sources(text, deb822=True)] == ["http://a.example/debian"]


def test_read_host_sources_walks_the_tree(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://list.example/debian bookworm main\n", encoding="utf-8")
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(
        "Types: deb\nURIs: http://822.example/debian\nSuites: bookworm\nComponents: main\n", encoding="utf-8"
    )
    (parts / "b-extra.list").write_text("deb http://extra.example/debian bookworm main\n", encoding="utf-8")
    (parts / "ignored.list.save").write_text(
        "deb http://save.example/debian bookworm main\n", encoding="utf-8"
    )
    (parts / "dir.list").mkdir()
    uris = [source.uri for source in read_host_sources(tmp_path)]
    assert uris == ["http://list.example/debian", "http://extra.example/debian", "http://822.example/debian"]


def test_read_host_sources_tells_deb822_in_sources_list_by_content(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "Types: deb\nURIs: http://inline.example/debian\nSuites: bookworm\nComponents: main\n",
        encoding="utf-8",
    )
    assert read_host_sources(tmp_path) == [
        AptSource("http://inline.example/debian", ("bookworm",), ("main",))
    ]


def test_read_host_sources_with_nothing_there(tmp_path: Path) -> None:
    assert read_host_sources(tmp_path) == []


def test_pick_mirror_skips_security_and_updates() -> None:
    sources = [
        AptSource("http://security.debian.org/debian-security", ("bookworm-security",), ("main",)),
        AptSource("http://updates.example/debian", ("bookworm-updates",), ("main",)),
        AptSource("http://contrib-only.example/debian", ("bookworm",), ("contrib",)),
        AptSource("http://trixie.example/debian", ("trixie",), ("main",)),
        AptSource("http://mirror.example/debian/", ("bookworm",), ("main",)),
    ]
    assert pick_mirror(sources) == "http://mirror.example/debian"


def test_pick_mirror_without_one_raises_with_hint() -> None:
    with pytest.raises(BootstrapError) as caught:
        pick_mirror(
            [AptSource("http://security.debian.org/debian-security", ("bookworm-security",), ("main",))]
        )
    assert "bookworm" in caught.value.message
    assert caught.value.hint is not None
    assert "deb http://deb.debian.org/debian bookworm main" in caught.value.hint


def test_render_sources_list_keeps_this_release_only_once() -> None:
    sources = [
        AptSource("http://mirror.example/debian", ("bookworm", "bookworm-updates"), ("main", "contrib")),
        AptSource("http://security.debian.org/debian-security", ("bookworm-security",), ("main",)),
        AptSource("http://security.debian.org", ("bookworm/updates",), ()),
        AptSource("http://trixie.example/debian", ("trixie",), ("main",)),
        AptSource("http://mirror.example/debian", ("bookworm",), ("main", "contrib")),
    ]
    assert render_sources_list(sources) == (
        "deb http://mirror.example/debian bookworm main contrib\n"
        "deb http://mirror.example/debian bookworm-updates main contrib\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb http://security.debian.org bookworm/updates main\n"
    )
