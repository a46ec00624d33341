"""The git gate: agent commits come back to the host only as a validated bundle.

The container hands over one file, a git bundle. The host never runs git in the agent's repository,
never reads its config, hooks or attributes, and never lets the bundle's objects or refs into the
host repository until every check has passed in a quarantine repository:

    bundle file ──parse header──> refs and prerequisites (ours, not git's, parser)
                └─index-pack────> quarantine.git (objects/info/alternates -> host objects)
                                   ├── index-pack --strict     fsck of every object the bundle carries
                                   ├── merge-base --is-ancestor base tip
                                   └── diff-tree of each new commit: names, symlinks, submodules, sizes
    host repo <──fetch (objects only)── quarantine.git, then update-ref with an expected old value

Git before 2.46 skips fsck when fetching from a bundle (threat catalogue §0.5), so the gate never
fetches from the bundle: it feeds the bundle's pack to ``index-pack`` itself and runs the strict
checks on it. The host's work tree, index and HEAD are never touched.
"""

from __future__ import annotations

import contextvars
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from containai.errors import GateRefused, HostToolError, UsageError
from containai.workspace.owner import owner_identity

__all__ = [
    "GatePolicy",
    "ImportResult",
    "import_bundle",
    "parse_bundle_header",
    "render_export_script",
]


@dataclass(frozen=True)
class GatePolicy:
    max_blob_bytes: int = 50 * 2**20
    # Caps the input to index-pack too, so a bundle cannot fill the quarantine's disk unchecked.
    max_bundle_bytes: int = 2**30

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatePolicy:
        """``CONTAINAI_GATE_MAX_BLOB`` (bytes, or with k/m/g) raises or lowers the blob limit."""
        text = environ.get("CONTAINAI_GATE_MAX_BLOB", "").strip().lower()
        if not text:
            return cls()
        match = re.fullmatch(r"(\d+)([kmg]?)b?", text)
        if not match:
            raise UsageError(
                f"CONTAINAI_GATE_MAX_BLOB={text!r} is not a size", hint="use bytes or a size like 100m"
            )
        scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2)]
        return cls(max_blob_bytes=int(match.group(1)) * scale)


@dataclass(frozen=True)
class ImportResult:
    branch: str  # the host branch that was written (or already held the tip)
    tip: str  # commit sha imported
    commits: int  # commits the written branch gained (from base when created or diverged)
    diverged: bool  # the work went to a new ``<branch>-diverged-<UTC>`` branch
    created: bool  # the written branch did not exist before
    diverged_reason: str | None = None  # why, when diverged
    worktree_updated: bool = False  # the branch was checked out, and its work tree moved with it


@dataclass(frozen=True)
class BundleHeader:
    version: int
    object_format: str
    prerequisites: tuple[str, ...]
    refs: tuple[tuple[str, str], ...]  # (sha, refname) in file order
    pack_offset: int


# ---------------------------------------------------------------------------------------------------------
# Hardened host git


# fsck findings that are only warnings by default but are how a tree smuggles a path into .git.
_FSCK_ERRORS = (
    "hasDotgit",
    "hasDot",
    "hasDotdot",
    "fullPathname",
    "zeroPaddedFilemode",
    "emptyName",
    "badFilemode",
    "nullSha1",
)

# Every host git call carries these. They pin behaviour that a repository (ours, the quarantine's,
# or anything reachable through one) could otherwise turn into command execution or network access.
_HARDENING = (
    "--no-replace-objects",
    *("-c", "core.hooksPath=/dev/null"),
    *("-c", "core.fsmonitor=false"),
    *("-c", "core.attributesFile=/dev/null"),
    *("-c", "core.protectNTFS=true"),
    *("-c", "core.protectHFS=true"),
    *("-c", "protocol.allow=never"),
    # The only transport the gate uses is a local path to its own quarantine repository.
    *("-c", "protocol.file.allow=always"),
    *("-c", "gc.auto=0"),
    *("-c", "maintenance.auto=false"),
    *("-c", "fetch.recurseSubmodules=false"),
    *("-c", "submodule.recurse=false"),
    # The landing fetch from the quarantine re-checks what it receives (a file:// fetch does fsck).
    *("-c", "transfer.fsckObjects=true"),
    *(arg for key in ("fsck", "fetch.fsck") for msg in _FSCK_ERRORS for arg in ("-c", f"{key}.{msg}=error")),
)

# index-pack takes the severities on its command line; it does not read fsck.* config.
_STRICT = "--strict=" + ",".join(f"{msg}=error" for msg in _FSCK_ERRORS)


# Who host git runs as during an import: the repository's owner when we are root and the repository
# is not root's, so that no root-owned refs or objects end up in a user's .git (see owner_identity).
_RUN_AS: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("containai_gate_run_as", default={})  # noqa: B039  # never mutated


def _clean_env(environ: Mapping[str, str]) -> dict[str, str]:
    env = {key: value for key, value in environ.items() if not key.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_ATTR_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_NO_REPLACE_OBJECTS="1",
        GIT_LFS_SKIP_SMUDGE="1",
        GIT_OPTIONAL_LOCKS="0",
        LC_ALL="C",
    )
    return env


def _git_exe() -> str:
    exe = shutil.which("git")
    if exe is None:
        raise HostToolError("git is not installed", hint="install it: `sudo apt-get install git`")
    return exe


def run_git(
    *args: str,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    input_bytes: bytes | None = None,
    stdin: BinaryIO | None = None,
    check: bool = True,
    config: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run the host's git hardened: clean env, no system or global config, no hooks, no shell.

    ``git_dir`` is only ever the gate's own quarantine; ``cwd`` the trusted host repository.
    ``config`` adds ``-c`` pairs of the caller's (see ``_filters_off``).
    """
    where: tuple[str, ...] = (f"--git-dir={git_dir}",) if git_dir is not None else ()
    if cwd is not None and git_dir is None:
        where = ("-C", str(cwd))
    result = subprocess.run(
        [_git_exe(), *_HARDENING, *config, *where, *args],
        input=input_bytes,
        stdin=stdin,
        capture_output=True,
        env=_clean_env(os.environ),
        cwd=cwd,
        check=False,
        **_RUN_AS.get(),
    )
    if check and result.returncode != 0:
        raise HostToolError(
            f"git {args[0]} failed: {_last_line(result.stderr) or f'exit {result.returncode}'}"
        )
    return result


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "backslashreplace").strip().splitlines()
    return lines[-1] if lines else ""


def _out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode("utf-8", "backslashreplace").strip()


# ---------------------------------------------------------------------------------------------------------
# Bundle header (untrusted input; parsed here so that git never reads the bundle)

_SIGNATURES = {b"# v2 git bundle\n": 2, b"# v3 git bundle\n": 3}
_HEX = {"sha1": 40, "sha256": 64}
_MAX_HEADER_LINE = 4096
_MAX_HEADER_BYTES = 2**20


def parse_bundle_header(stream: BinaryIO) -> BundleHeader:
    """Read a v2/v3 bundle header; raise GateRefused-ready ValueError text on anything unexpected."""
    first = stream.readline(_MAX_HEADER_LINE)
    version = _SIGNATURES.get(first)
    if version is None:
        raise ValueError("not a git bundle (no '# v2 git bundle' or '# v3 git bundle' signature)")
    object_format = "sha1"
    prerequisites: list[str] = []
    refs: list[tuple[str, str]] = []
    consumed = len(first)
    while True:
        line = stream.readline(_MAX_HEADER_LINE)
        consumed += len(line)
        if consumed > _MAX_HEADER_BYTES:
            raise ValueError("bundle header is larger than 1 MiB")
        if not line.endswith(b"\n"):
            raise ValueError("bundle header is truncated or has an over-long line")
        if line == b"\n":
            break
        text = line[:-1].decode("utf-8", "strict") if _is_utf8(line) else None
        if text is None:
            raise ValueError("bundle header is not valid UTF-8")
        if text.startswith("@"):
            if version != 3 or prerequisites or refs:
                raise ValueError(f"unexpected capability line {text!r}")
            key, _, value = text[1:].partition("=")
            if key == "object-format" and value in _HEX:
                object_format = value
            else:
                # @filter would mean a partial bundle: objects the host cannot check are missing.
                raise ValueError(f"unsupported bundle capability {text!r}")
        elif text.startswith("-"):
            sha = text[1:].split(" ", 1)[0]
            if not _is_hex(sha, object_format):
                raise ValueError(f"malformed prerequisite line {_show(text)}")
            prerequisites.append(sha)
        else:
            sha, sep, name = text.partition(" ")
            if not sep or not _is_hex(sha, object_format) or not name:
                raise ValueError(f"malformed ref line {_show(text)}")
            refs.append((sha, name))
    if stream.read(4) != b"PACK":
        raise ValueError("bundle has no pack data after its header")
    return BundleHeader(version, object_format, tuple(prerequisites), tuple(refs), consumed)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8", "strict")
    except UnicodeDecodeError:
        return False
    return True


def _is_hex(text: str, object_format: str) -> bool:
    return len(text) == _HEX[object_format] and re.fullmatch(r"[0-9a-f]+", text) is not None


# ---------------------------------------------------------------------------------------------------------
# Path rules (pure)

# Code points HFS+ ignores when comparing names, so ".g\u200cit" is ".git" on a Mac (git's utf8.c list).
_HFS_IGNORABLE = frozenset(
    chr(cp) for cp in (0x200C, 0x200D, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF)
)
_NTFS_SHORT_DOTGIT = re.compile(r"git~\d+")
_NTFS_SHORT_GITMODULES = re.compile(r"(gitmod|gi7eba)~\d+")


def _fold(component: bytes) -> str:
    """The name a case-insensitive, HFS or NTFS file system would actually use for ``component``."""
    text = component.decode("utf-8", "replace")
    text = "".join(ch for ch in text if ch not in _HFS_IGNORABLE)
    text = text.split(":", 1)[0]  # NTFS alternate data stream: ".git::$INDEX_ALLOCATION" is ".git"
    return text.rstrip(" .").casefold()


def is_dotgit(component: bytes) -> bool:
    folded = _fold(component)
    return folded == ".git" or _NTFS_SHORT_DOTGIT.fullmatch(folded) is not None


def is_dotgitmodules(component: bytes) -> bool:
    folded = _fold(component)
    return folded == ".gitmodules" or _NTFS_SHORT_GITMODULES.fullmatch(folded) is not None


def check_path(path: bytes) -> list[str]:
    """Reasons a tree path must not reach a host checkout (empty when it is fine)."""
    reasons = []
    if re.search(rb"[\x00-\x1f\x7f]", path):
        reasons.append(f"{_show(path)}: control character in path")
    for component in path.split(b"/"):
        if component in (b"", b".", b".."):
            reasons.append(f"{_show(path)}: path component {_show(component)} is not allowed")
        # A backslash separates components on Windows checkouts.
        elif any(is_dotgit(piece) for piece in component.split(b"\\")):
            reasons.append(f"{_show(path)}: path component {_show(component)} would be read as .git")
    return reasons


def check_symlink(path: bytes, target: bytes) -> str | None:
    """Why a symlink at ``path`` pointing to ``target`` could reach outside the repository, or None.

    Checked lexically. A '..' is only allowed before the first name: after a name it would be
    resolved through whatever that name is (possibly another symlink), which a lexical check cannot see.
    """
    shown = f"{_show(path)} -> {_show(target)}"
    if not target:
        return f"symlink {shown}: empty target"
    if target.startswith((b"/", b"\\")) or re.match(rb"[A-Za-z]:", target):
        return f"symlink {shown}: absolute target"
    depth = path.count(b"/")
    seen_name = False
    for part in re.split(rb"[/\\]", target):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if seen_name:
                return f"symlink {shown}: '..' after a name in the target"
            depth -= 1
            if depth < 0:
                return f"symlink {shown}: target is outside the repository"
        else:
            seen_name = True
            if is_dotgit(part):
                return f"symlink {shown}: target is inside .git"
    return None


def _show(value: bytes | str) -> str:
    """A path or name made safe for a terminal: control and format characters escaped."""
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cf"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


# ---------------------------------------------------------------------------------------------------------
# Checks in the quarantine


@dataclass(frozen=True)
class _Entry:
    mode: str
    sha: str
    path: bytes


def _diff_entries(quarantine: Path, commits: Sequence[str]) -> Iterator[_Entry]:
    """Every (mode, sha, path) a new commit adds or changes, against each of its parents.

    An entry a commit shares with a parent was either checked at that parent (a new commit) or is
    the host's own content, so together these cover everything the bundle can bring in.
    """
    if not commits:
        return
    out = run_git(
        "diff-tree",
        "--stdin",
        "-r",
        "-t",
        "-z",
        "-m",
        "--root",
        "--no-renames",
        "--ignore-submodules=none",
        git_dir=quarantine,
        input_bytes="".join(f"{c}\n" for c in commits).encode(),
    ).stdout
    tokens = iter(out.split(b"\0"))
    for token in tokens:
        # Other tokens name the commit (and parent) the entries that follow belong to.
        if token.startswith(b":"):
            _, dst_mode, _, dst_sha, status = token[1:].decode().split(" ")
            path = next(tokens)
            if status != "D":
                yield _Entry(dst_mode, dst_sha, path)


def _object_info(git_dir: Path | None, cwd: Path | None, shas: Iterable[str]) -> dict[str, tuple[str, int]]:
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return {}
    out = run_git(
        "cat-file",
        "--batch-check=%(objectname) %(objecttype) %(objectsize)",
        git_dir=git_dir,
        cwd=cwd,
        input_bytes="".join(f"{s}\n" for s in wanted).encode(),
    ).stdout.decode()
    info = {}
    for line in out.splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[1] != "missing":
            info[parts[0]] = (parts[1], int(parts[2]))
    return info


def _read_blobs(quarantine: Path, shas: Iterable[str]) -> dict[str, bytes]:
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return {}
    out = run_git(
        "cat-file", "--batch", git_dir=quarantine, input_bytes="".join(f"{s}\n" for s in wanted).encode()
    ).stdout
    blobs = {}
    pos = 0
    for sha in wanted:
        end = out.index(b"\n", pos)
        header = out[pos:end].decode().split(" ")
        pos = end + 1
        if len(header) == 3 and header[1] == "blob":
            size = int(header[2])
            blobs[sha] = out[pos : pos + size]
            pos += size + 1
    return blobs


def _submodule_config(git_dir: Path | None, cwd: Path | None, blob: str) -> dict[tuple[str, str], str] | None:
    """``{(name, key): value}`` for the url and update keys of a .gitmodules blob; None if unparsable."""
    result = run_git(
        "config", f"--blob={blob}", "--no-includes", "-z", "--list", git_dir=git_dir, cwd=cwd, check=False
    )
    if result.returncode != 0:
        return None
    found = {}
    for item in result.stdout.split(b"\0"):
        key, _, value = item.decode("utf-8", "backslashreplace").partition("\n")
        section, _, rest = key.partition(".")
        name, _, var = rest.rpartition(".")
        # `update = !command` runs a command on `git submodule update`, so it counts like a url.
        if section == "submodule" and var in ("url", "update"):
            found[(name, var)] = value
    return found


def _base_gitlinks(repo: Path, base: str) -> set[bytes]:
    out = run_git("ls-tree", "-r", "-z", "--full-tree", base, cwd=repo).stdout
    links = set()
    for item in out.split(b"\0"):
        meta, _, path = item.partition(b"\t")
        if meta.startswith(b"160000 "):
            links.add(path)
    return links


def _check_entries(
    repo: Path, quarantine: Path, base: str, entries: list[_Entry], policy: GatePolicy
) -> list[str]:
    reasons: list[str] = []
    for entry in entries:
        reasons += check_path(entry.path)
        if entry.mode not in ("040000", "100644", "100755", "120000", "160000"):
            reasons.append(f"{_show(entry.path)}: unusual file mode {entry.mode}")

    blob_entries = [e for e in entries if e.mode in ("100644", "100755", "120000")]
    info = _object_info(quarantine, None, (e.sha for e in blob_entries))
    oversized = [e for e in blob_entries if info.get(e.sha, ("", 0))[1] > policy.max_blob_bytes]
    # A big blob the host already holds is not something the agent introduced.
    already = _object_info(None, repo, (e.sha for e in oversized))
    for entry in oversized:
        if entry.sha not in already:
            reasons.append(
                f"{_show(entry.path)}: blob of {info[entry.sha][1]} bytes exceeds the {policy.max_blob_bytes}-byte limit"
            )

    links = [e for e in entries if e.mode == "120000" and info.get(e.sha, ("", 0))[1] <= 4096]
    targets = _read_blobs(quarantine, (e.sha for e in links))
    for entry in entries:
        if entry.mode != "120000":
            continue
        if entry.sha not in targets:
            reasons.append(f"symlink {_show(entry.path)}: target is missing or longer than 4096 bytes")
        elif (why := check_symlink(entry.path, targets[entry.sha])) is not None:
            reasons.append(why)

    gitlinks = [e for e in entries if e.mode == "160000"]
    if gitlinks:
        known = _base_gitlinks(repo, base)
        for entry in gitlinks:
            if entry.path not in known:
                reasons.append(f"{_show(entry.path)}: new submodule (gitlink) not in the session's base")

    modules = [e for e in entries if is_dotgitmodules(e.path.rsplit(b"/", 1)[-1])]
    if modules:
        has_base = run_git("cat-file", "-e", f"{base}:.gitmodules", cwd=repo, check=False).returncode == 0
        before = (_submodule_config(None, repo, f"{base}:.gitmodules") if has_base else {}) or {}
        for entry in modules:
            if entry.mode in ("120000", "160000"):
                reasons.append(f"{_show(entry.path)}: .gitmodules must be a regular file")
                continue
            if entry.mode == "040000":
                continue
            after = _submodule_config(quarantine, None, entry.sha)
            if after is None:
                reasons.append(f"{_show(entry.path)}: .gitmodules cannot be parsed")
                continue
            for (name, var), value in after.items():
                if before.get((name, var)) != value:
                    was = before.get((name, var))
                    change = f"changed from {_show(was)}" if was is not None else "added"
                    reasons.append(
                        f"{_show(entry.path)}: submodule {_show(name)} {var} {_show(value)} {change}"
                    )
    return reasons


def _fsck_reasons(stderr: bytes) -> list[str]:
    lines = stderr.decode("utf-8", "backslashreplace").splitlines()
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    return [f"fsck: {_show(ln)[1:-1]}" for ln in (errors or lines[-1:] or ["index-pack --strict failed"])]


# ---------------------------------------------------------------------------------------------------------
# Import


def _utc_now() -> datetime:
    return datetime.now(UTC)


def import_bundle(
    repo: Path,
    bundle: Path,
    *,
    branch: str,
    base: str,
    policy: GatePolicy = GatePolicy(),
    now: Callable[[], datetime] = _utc_now,
    move_worktree: bool = False,
) -> ImportResult:
    """Validate ``bundle`` in quarantine and land its one branch in ``repo``.

    The work tree is never touched, except with ``move_worktree`` (the user launched on the branch
    checked out in ``repo``): then, when that branch has not moved and its work tree is clean, the
    branch and its work tree are fast-forwarded together. Whenever the branch cannot take the work,
    it lands on a new ``<branch>-diverged-<UTC>`` branch, with the reason in the result.

    Raises GateRefused (every reason found) when the bundle fails a check; nothing is written then.
    """
    identity = owner_identity(repo)
    token = _RUN_AS.set(identity)
    try:
        ref = f"refs/heads/{branch}"
        checked = run_git("check-ref-format", ref, cwd=repo, check=False)
        if checked.stderr.strip():  # git could not run there at all (no such directory, no access)
            raise HostToolError(f"git cannot work in {repo}: {_last_line(checked.stderr)}")
        if checked.returncode != 0 or branch.startswith("-"):
            raise UsageError(
                f"{branch!r} is not a valid branch name",
                hint="pass the session's branch, e.g. claude/session-3",
            )
        object_format = _out(run_git("rev-parse", "--show-object-format", cwd=repo))
        objects = Path(
            _out(run_git("rev-parse", "--path-format=absolute", "--git-path", "objects", cwd=repo))
        )

        def refuse(reasons: Sequence[str]) -> GateRefused:
            return GateRefused(reasons, bundle=bundle, branch=branch)

        return _import(
            repo,
            bundle,
            ref,
            branch,
            base,
            policy,
            now,
            objects,
            object_format,
            refuse,
            identity,
            move_worktree,
        )
    finally:
        _RUN_AS.reset(token)


def _import(
    repo: Path,
    bundle: Path,
    ref: str,
    branch: str,
    base: str,
    policy: GatePolicy,
    now: Callable[[], datetime],
    objects: Path,
    object_format: str,
    refuse: Callable[[Sequence[str]], GateRefused],
    identity: Mapping[str, Any],
    move_worktree: bool,
) -> ImportResult:
    with tempfile.TemporaryDirectory(prefix="containai-gate-") as tmp:
        if identity:
            os.chown(tmp, identity["user"], identity["group"])
        quarantine = Path(tmp) / "quarantine.git"
        tip = _validate(repo, bundle, ref, base, policy, quarantine, objects, object_format, refuse)
        return _land(repo, quarantine, branch, base, tip, now, move_worktree=move_worktree)


def _validate(
    repo: Path,
    bundle: Path,
    ref: str,
    base: str,
    policy: GatePolicy,
    quarantine: Path,
    host_objects: Path,
    object_format: str,
    refuse: Callable[[Sequence[str]], GateRefused],
) -> str:
    try:
        # Not through a symlink, and only a regular file: the container may have placed the path.
        fd = os.open(bundle, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise refuse([f"cannot open the bundle: {exc.strerror}"]) from None
    stream = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        stream.close()
        raise refuse(["the bundle is not a regular file"])
    size = info.st_size
    with stream:
        if size > policy.max_bundle_bytes:
            raise refuse([f"bundle is {size} bytes, over the {policy.max_bundle_bytes}-byte limit"])
        try:
            header = parse_bundle_header(stream)
        except ValueError as exc:
            raise refuse([str(exc)]) from None

        reasons: list[str] = []
        if header.object_format != object_format:
            raise refuse([f"bundle uses {header.object_format} but the repository uses {object_format}"])
        tips = [sha for sha, name in header.refs if name == ref]
        tip = tips[0] if len(tips) == 1 else ""
        if len(tips) > 1:
            reasons.append(f"{ref}: listed {len(tips)} times")
        for sha, name in header.refs:
            # HEAD naming the branch's own commit is what `git bundle create ... HEAD` adds; harmless.
            if name != ref and not (name == "HEAD" and sha == tip):
                reasons.append(f"{_show(name)}: only {ref} may be imported")
        if not tips:
            reasons.append(f"{ref}: not in the bundle")
        if (
            not _is_hex(base, object_format)
            or run_git("cat-file", "-e", f"{base}^{{commit}}", cwd=repo, check=False).returncode
        ):
            reasons.append(f"base {_show(base)}: not a commit in the host repository")
        present = _object_info(None, repo, header.prerequisites)
        for sha in header.prerequisites:
            if present.get(sha, ("",))[0] != "commit":
                reasons.append(f"prerequisite {sha}: not a commit in the host repository")
        if reasons:
            # Nothing below can run without the branch, the base and every prerequisite.
            raise refuse(reasons)

        # An empty --template: the quarantine gets no sample hooks or info/exclude, only what we write.
        run_git(
            "init", "--bare", "--quiet", "--template=", f"--object-format={object_format}", str(quarantine),
            cwd=quarantine.parent,
        )  # fmt: skip
        # Reads fall through to the host's objects (the thin pack's bases); writes stay in quarantine.
        (quarantine / "objects" / "info").mkdir(parents=True, exist_ok=True)
        (quarantine / "objects" / "info" / "alternates").write_text(f"{host_objects}\n", encoding="utf-8")

        # index-pack reads the file descriptor, not Python's buffer: position the descriptor itself.
        os.lseek(stream.fileno(), header.pack_offset, os.SEEK_SET)
        indexed = run_git(
            "index-pack", "--stdin", "--fix-thin", f"--max-input-size={policy.max_bundle_bytes}",
            git_dir=quarantine, stdin=stream, check=False,
        )  # fmt: skip
        if indexed.returncode != 0:
            raise refuse([f"the bundle's pack is unusable: {_last_line(indexed.stderr)}"])

    # git's own fsck rules, on exactly the objects the bundle carried (git fsck would walk the whole host).
    pack = quarantine / "objects" / "pack" / f"pack-{indexed.stdout.decode().split()[-1]}.pack"
    verify = run_git(
        "index-pack",
        _STRICT,
        "-o",
        str(quarantine / "verify.idx"),
        str(pack),
        git_dir=quarantine,
        check=False,
    )
    # Listed last: the gate's own reasons name paths, fsck's name object ids.
    fsck_reasons = _fsck_reasons(verify.stderr) if verify.returncode != 0 else []

    if _out(run_git("cat-file", "-t", tip, git_dir=quarantine, check=False)) != "commit":
        raise refuse([*reasons, f"{ref}: {tip} is not a commit in the bundle", *fsck_reasons])
    if run_git("merge-base", "--is-ancestor", base, tip, git_dir=quarantine, check=False).returncode != 0:
        reasons.append(f"{ref}: {tip[:12]} does not descend from the session's base {base[:12]}")

    excluded = "".join(f"^{sha}\n" for sha in (base, *header.prerequisites))
    new_commits = _out(
        run_git("rev-list", "--stdin", git_dir=quarantine, input_bytes=f"{tip}\n{excluded}".encode())
    )
    entries = list(_diff_entries(quarantine, new_commits.split()))
    reasons += _check_entries(repo, quarantine, base, entries, policy)
    reasons += fsck_reasons
    if reasons:
        raise refuse(list(dict.fromkeys(reasons)))
    run_git("update-ref", ref, tip, git_dir=quarantine)
    return tip


def worktrees_with(repo: Path, ref: str) -> list[Path]:
    """The work trees (the main one included) that have ``ref`` checked out."""
    token = _RUN_AS.set(owner_identity(repo))
    try:
        listed = run_git("worktree", "list", "--porcelain", "-z", cwd=repo)
    finally:
        _RUN_AS.reset(token)
    out = listed.stdout.decode("utf-8", "surrogateescape")
    found: list[Path] = []
    for entry in out.split("\0\0"):
        fields = entry.strip("\0").split("\0")
        path = next((f[len("worktree ") :] for f in fields if f.startswith("worktree ")), None)
        if path is not None and f"branch {ref}" in fields:
            found.append(Path(path))
    return found


def _filters_off(repo: Path) -> tuple[str, ...]:
    """``-c`` pairs that switch off every filter driver the repository configures.

    Checking files out runs a driver's smudge command, and ``git status`` its clean command; the
    agent's commits can name any driver in a ``.gitattributes``. System and global config are not
    read at all (``_clean_env``), so the repository's own config is all there is to switch off.
    """
    listed = run_git("config", "--name-only", "--get-regexp", r"^filter\.", cwd=repo, check=False)
    drivers = {
        name[len("filter.") :].rpartition(".")[0]
        for name in listed.stdout.decode("utf-8", "surrogateescape").split()
    }
    pairs: list[str] = []
    for driver in sorted(d for d in drivers if d):
        for key, value in (("clean", ""), ("smudge", ""), ("process", ""), ("required", "false")):
            pairs += ["-c", f"filter.{driver}.{key}={value}"]
    return tuple(pairs)


def _fast_forward_checkout(repo: Path, branch: str, existing: str, tip: str) -> str | None:
    """Move the checked-out ``branch`` and its work tree together from ``existing`` to ``tip``.

    None when done, else why not. Only a clean work tree moves (untracked files git would overwrite
    stop it too); hooks, fsmonitor (``_HARDENING``) and filter drivers are off throughout.
    """
    off = (*_filters_off(repo), *("-c", "merge.autoStash=false"), *("-c", "rebase.autoStash=false"))
    head = _out(run_git("symbolic-ref", "--quiet", "HEAD", cwd=repo, check=False))
    if head != f"refs/heads/{branch}":
        return f"{branch} is no longer checked out in {repo}"
    status = run_git(
        "status", "--porcelain=v1", "-z", "--untracked-files=no", "--ignore-submodules=none",
        cwd=repo, config=off, check=False,
    )  # fmt: skip
    if status.returncode != 0:
        return f"git status failed in {repo}: {_last_line(status.stderr)}"
    changed = [entry[3:] for entry in status.stdout.decode("utf-8", "backslashreplace").split("\0") if entry]
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return f"{branch} has uncommitted changes on the host ({shown})"
    merged = run_git(
        "merge", "--ff-only", "--no-stat", "--quiet", "--no-edit", tip, cwd=repo, config=off, check=False
    )
    if merged.returncode != 0:
        return f"bringing {branch}'s work tree forward failed: {_last_line(merged.stderr)}"
    if _sha_of(repo, f"refs/heads/{branch}") != tip:
        return f"{branch} changed on the host during the import"
    return None


def _sha_of(repo: Path, ref: str) -> str | None:
    return (
        _out(run_git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=repo, check=False)) or None
    )


def _count(repo: Path, tip: str, since: str) -> int:
    return int(_out(run_git("rev-list", "--count", tip, f"^{since}", cwd=repo)))


def _land(
    repo: Path,
    quarantine: Path,
    branch: str,
    base: str,
    tip: str,
    now: Callable[[], datetime],
    *,
    move_worktree: bool = False,
) -> ImportResult:
    ref = f"refs/heads/{branch}"
    existing = _sha_of(repo, ref)
    if existing == tip:
        return ImportResult(branch=branch, tip=tip, commits=0, diverged=False, created=False)

    # Objects only: no refspec destination, no FETCH_HEAD. The ref moves below, with an old-value check.
    run_git(
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        str(quarantine),
        ref,
        cwd=repo,
    )

    zero = "0" * len(tip)
    reason: str | None = None
    moved = existing is not None and bool(
        run_git("merge-base", "--is-ancestor", existing, tip, cwd=repo, check=False).returncode
    )
    worktrees = worktrees_with(repo, ref)
    if moved:
        reason = f"{branch} has moved on the host since the session started"
    elif worktrees and (
        not move_worktree or existing is None or [w.resolve() for w in worktrees] != [repo.resolve()]
    ):
        where = ", ".join(str(w) for w in worktrees)
        reason = f"{branch} is checked out on the host (in {where}); moving it would change that work tree"
    elif worktrees and existing is not None:
        reason = _fast_forward_checkout(repo, branch, existing, tip)
        if reason is None:
            return ImportResult(
                branch=branch,
                tip=tip,
                commits=_count(repo, tip, existing),
                diverged=False,
                created=False,
                worktree_updated=True,
            )
    if reason is None:
        message = (
            "containai: import agent work (fast-forward)" if existing else "containai: import agent work"
        )
        if run_git("update-ref", "-m", message, ref, tip, existing or zero, cwd=repo, check=False).returncode:
            raise HostToolError(
                f"{branch} changed on the host during the import", hint="run the import again"
            )
        return ImportResult(
            branch=branch,
            tip=tip,
            commits=_count(repo, tip, existing or base),
            diverged=False,
            created=existing is None,
        )

    stamp = now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 100):
        name = f"{branch}-diverged-{stamp}" + (f"-{n}" if n > 1 else "")
        message = f"containai: import agent work ({reason})"
        if (
            run_git(
                "update-ref", "-m", message, f"refs/heads/{name}", tip, zero, cwd=repo, check=False
            ).returncode
            == 0
        ):
            return ImportResult(
                branch=name,
                tip=tip,
                commits=_count(repo, tip, base),
                diverged=True,
                created=True,
                diverged_reason=reason,
            )
    raise HostToolError(
        f"could not create a {branch}-diverged-{stamp} branch", hint="delete old diverged branches and retry"
    )


# ---------------------------------------------------------------------------------------------------------
# The container side


_EXPORT_SCRIPT = """\
#!/bin/bash
# containai export: commit the session's uncommitted work and bundle exactly one branch.
set -euo pipefail
branch={branch}
bundle={bundle}
base={base}
ref="refs/heads/$branch"
# The agent's own hooks and fsmonitor must not change what gets exported.
g() {{ git -c core.hooksPath=/dev/null -c core.fsmonitor=false "$@"; }}
rm -f -- "$bundle"
if [ "$(g symbolic-ref -q HEAD || true)" = "$ref" ]; then
  if [ -n "$(g status --porcelain --untracked-files=all)" ]; then
    ident=()
    if ! g config user.email >/dev/null; then ident=(-c user.name=ContainAI -c user.email=containai@localhost); fi
    g add -A
    g "${{ident[@]}}" commit --no-verify --quiet -m "containai: uncommitted work at session end"
  fi
elif [ -n "$(g status --porcelain --untracked-files=all)" ]; then
  # Uncommitted work on another branch would be lost with the container: refuse, so it is kept.
  echo "containai: HEAD is not on $branch and there is uncommitted work; commit it on $branch" >&2
  exit 4
fi
if ! g rev-parse --quiet --verify "$ref^{{commit}}" >/dev/null; then
  echo "containai: branch $branch does not exist" >&2
  exit 3
fi
if [ -n "$base" ]; then
  if [ "$(g rev-list --count "$ref" "^$base")" = 0 ]; then
    echo "containai: no new commits on $branch; no bundle written" >&2
    exit 0
  fi
  g bundle create --quiet "$bundle" "$ref" "^$base"
else
  g bundle create --quiet "$bundle" "$ref"
fi
"""


def render_export_script(branch: str, bundle_path: str, *, base: str | None = None) -> str:
    """Bash for the container: commit leftover work on ``branch``, bundle ``refs/heads/<branch>``.

    With ``base``, the bundle holds only the commits after it (the host has the rest), and when
    there are none no bundle is written: a missing bundle means nothing to import.
    """
    return _EXPORT_SCRIPT.format(
        branch=shlex.quote(branch), bundle=shlex.quote(bundle_path), base=shlex.quote(base or "")
    )
