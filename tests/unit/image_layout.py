"""The programs of an image laid out as the image build lays them out, in a folder of the test's.

``lay_out(root, "base")`` writes ``root/lib/containai/inside/*.py`` and ``root/bin/<command>`` from the
same ``program_files`` the build uses, with the launchers pointing at ``root/lib``; tests run them
as processes (``[sys.executable, "-I", launcher, ...]``), exactly as the image runs them.
"""

from __future__ import annotations

from pathlib import Path

from containai.images.build import program_files
from containai.images.catalog import PROGRAMS


def lay_out(root: Path, part: str) -> dict[str, Path]:
    """The launchers of ``part``'s programs under ``root``, by command name."""
    library = root / "lib"
    for name, data in program_files(PROGRAMS[part], library=str(library)).items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o755 if name.startswith("bin/") else 0o644)
    return {program.command: root / "bin" / program.command for program in PROGRAMS[part]}
