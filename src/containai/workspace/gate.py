"""The git gate: agent commits come back to the host only as a validated bundle.

The container hands over one file, a git bundle. The host never runs git in the agent's repository,
never reads its config, hooks or attributes, and never lets the bundle's objects or refs into the
host repository until every check has passed in a quarantine repository:

    bundle file ──parse header──> refs and prerequisites (ours, not git's, parser)
                ├─scan the pack─> every object's and delta result's size within the blob limit (ours)
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

import dataclasses
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from containai.errors import GateRefused, HostToolError, UsageError
from containai.hostgit import (
    DEFAULT_MEMORY,
    FSCK_ERRORS,
    HEX_LENGTH,
    PACK_TIMEOUT,
    GitLimits,
    HostGit,
    failure,
)
from containai.text import last_line, printable
from containai.workspace.pack import PackRefused, PackTooLarge, scan_pack

__all__ = [
    "GatePolicy",
    "ImportResult",
    "Refusal",
    "import_bundle",
    "parse_bundle_header",
    "render_export_script",
]


@dataclass(frozen=True)
class GatePolicy:
    max_blob_bytes: int = 50 * 2**20
    # Caps the input to index-pack too, so a bundle cannot fill the quarantine's disk unchecked.
    max_bundle_bytes: int = 2**30
    # Address space of each host git process the gate runs (GitLimits); None: no limit.
    git_memory_bytes: int | None = DEFAULT_MEMORY


@dataclass(frozen=True)
class Refusal:
    """The commits the gate refused while the ones before them landed (a partial import)."""

    commit: str  # the first refused commit
    subject: str  # its subject line, printable
    reasons: tuple[str, ...]  # the refused commit's reasons first, then the rest's
    commits: int  # how many commits were refused (the tip's, not reachable from what landed)
    tip: str  # the refused branch's tip
    bundle: Path | None  # the refused commits as a bundle (never in a ref), when kept


@dataclass(frozen=True)
class ImportResult:
    branch: str  # the host branch that was written (or already held the tip)
    tip: str  # commit sha imported
    commits: int  # commits the written branch gained (from base when created or diverged)
    diverged: bool  # the work went to a new ``<branch>-diverged-<UTC>`` branch
    created: bool  # the written branch did not exist before
    diverged_reason: str | None = None  # why, when diverged
    worktree_updated: bool = False  # the branch was checked out, and its work tree moved with it
    refused: Refusal | None = None  # a partial import: what did not land, and why


@dataclass(frozen=True)
class BundleHeader:
    version: int
    object_format: str
    prerequisites: tuple[str, ...]
    refs: tuple[tuple[str, str], ...]  # (sha, refname) in file order
    pack_offset: int


# ---------------------------------------------------------------------------------------------------------
# Host git output (every call goes through HostGit, hardened in one place)


# index-pack takes the severities on its command line; it does not read fsck.* config.
_STRICT = "--strict=" + ",".join(f"{msg}=error" for msg in FSCK_ERRORS)


def _last_line(stderr: bytes) -> str:
    return last_line(stderr)  # git's words may quote the agent's (paths, refs): printable


def _out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode("utf-8", "backslashreplace").strip()


# ---------------------------------------------------------------------------------------------------------
# Bundle header (untrusted input; parsed here so that git never reads the bundle)

_SIGNATURES = {b"# v2 git bundle\n": 2, b"# v3 git bundle\n": 3}
_HEX = HEX_LENGTH
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
    """A path or name made safe for a terminal (control and format characters escaped), quoted."""
    return "'" + printable(value, limit=4096) + "'"


# ---------------------------------------------------------------------------------------------------------
# Checks in the quarantine


@dataclass(frozen=True)
class _Entry:
    commit: str  # the new commit that brings this entry
    mode: str
    sha: str
    path: bytes


def _diff_entries(git: HostGit, quarantine: Path, commits: Sequence[str]) -> Iterator[_Entry]:
    """Every (mode, sha, path) a new commit adds or changes, against each of its parents.

    An entry a commit shares with a parent was either checked at that parent (a new commit) or is
    the host's own content, so together these cover everything the bundle can bring in.
    """
    if not commits:
        return
    out = git.run(
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
    commit = ""
    for token in tokens:
        if token.startswith(b":"):
            _, dst_mode, _, dst_sha, status = token[1:].decode().split(" ")
            path = next(tokens)
            if status != "D":
                yield _Entry(commit, dst_mode, dst_sha, path)
        elif token:
            # Other tokens name the commit the entries that follow belong to.
            commit = token.decode().split(" ", 1)[0]


def _object_info(git: HostGit, git_dir: Path | None, shas: Iterable[str]) -> dict[str, tuple[str, int]]:
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return {}
    out = git.run(
        "cat-file",
        "--batch-check=%(objectname) %(objecttype) %(objectsize)",
        git_dir=git_dir,
        input_bytes="".join(f"{s}\n" for s in wanted).encode(),
    ).stdout.decode()
    info = {}
    for line in out.splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[1] != "missing":
            info[parts[0]] = (parts[1], int(parts[2]))
    return info


def _read_blobs(git: HostGit, quarantine: Path, shas: Iterable[str]) -> dict[str, bytes]:
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return {}
    out = git.run(
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


def _submodule_config(git: HostGit, git_dir: Path | None, blob: str) -> dict[tuple[str, str], str] | None:
    """``{(name, key): value}`` for the url and update keys of a .gitmodules blob; None if unparsable."""
    result = git.run(
        "config", f"--blob={blob}", "--no-includes", "-z", "--list", git_dir=git_dir, check=False
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


def _base_gitlinks(git: HostGit, base: str) -> set[bytes]:
    out = git.run("ls-tree", "-r", "-z", "--full-tree", base).stdout
    links = set()
    for item in out.split(b"\0"):
        meta, _, path = item.partition(b"\t")
        if meta.startswith(b"160000 "):
            links.add(path)
    return links


def _check_entries(
    git: HostGit, quarantine: Path, base: str, entries: list[_Entry], policy: GatePolicy
) -> list[tuple[str, str]]:
    """(commit, reason) for each entry that must not land; the commit is the one that brings it."""
    found: list[tuple[str, str]] = []
    for entry in entries:
        found += [(entry.commit, reason) for reason in check_path(entry.path)]
        if entry.mode not in ("040000", "100644", "100755", "120000", "160000"):
            found.append((entry.commit, f"{_show(entry.path)}: unusual file mode {entry.mode}"))

    blob_entries = [e for e in entries if e.mode in ("100644", "100755", "120000")]
    info = _object_info(git, quarantine, (e.sha for e in blob_entries))
    oversized = [e for e in blob_entries if info.get(e.sha, ("", 0))[1] > policy.max_blob_bytes]
    # A big blob the host already holds is not something the agent introduced.
    already = _object_info(git, None, (e.sha for e in oversized))
    for entry in oversized:
        if entry.sha not in already:
            found.append(
                (
                    entry.commit,
                    f"{_show(entry.path)}: blob of {info[entry.sha][1]} bytes exceeds the {policy.max_blob_bytes}-byte limit",
                )
            )

    links = [e for e in entries if e.mode == "120000" and info.get(e.sha, ("", 0))[1] <= 4096]
    targets = _read_blobs(git, quarantine, (e.sha for e in links))
    for entry in entries:
        if entry.mode != "120000":
            continue
        if entry.sha not in targets:
            found.append(
                (entry.commit, f"symlink {_show(entry.path)}: target is missing or longer than 4096 bytes")
            )
        elif (why := check_symlink(entry.path, targets[entry.sha])) is not None:
            found.append((entry.commit, why))

    gitlinks = [e for e in entries if e.mode == "160000"]
    if gitlinks:
        known = _base_gitlinks(git, base)
        for entry in gitlinks:
            if entry.path not in known:
                found.append(
                    (entry.commit, f"{_show(entry.path)}: new submodule (gitlink) not in the session's base")
                )

    modules = [e for e in entries if is_dotgitmodules(e.path.rsplit(b"/", 1)[-1])]
    if modules:
        has_base = git.run("cat-file", "-e", f"{base}:.gitmodules", check=False).returncode == 0
        before = (_submodule_config(git, None, f"{base}:.gitmodules") if has_base else {}) or {}
        for entry in modules:
            if entry.mode in ("120000", "160000"):
                found.append((entry.commit, f"{_show(entry.path)}: .gitmodules must be a regular file"))
                continue
            if entry.mode == "040000":
                continue
            after = _submodule_config(git, quarantine, entry.sha)
            if after is None:
                found.append((entry.commit, f"{_show(entry.path)}: .gitmodules cannot be parsed"))
                continue
            for (name, var), value in after.items():
                if before.get((name, var)) != value:
                    was = before.get((name, var))
                    change = f"changed from {_show(was)}" if was is not None else "added"
                    found.append(
                        (
                            entry.commit,
                            f"{_show(entry.path)}: submodule {_show(name)} {var} {_show(value)} {change}",
                        )
                    )
    return found


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
    git: HostGit | None = None,
    keep_refused: Path | None = None,
) -> ImportResult:
    """Validate ``bundle`` in quarantine and land its one branch in ``repo``.

    The work tree is never touched, except with ``move_worktree`` (the user launched on the branch
    checked out in ``repo``): then, when that branch has not moved and its work tree is clean, the
    branch and its work tree are fast-forwarded together. Whenever the branch cannot take the work,
    it lands on a new ``<branch>-diverged-<UTC>`` branch, with the reason in the result.

    When a commit fails a check, the commits before it on the branch's first-parent line land (each
    passed every check) and the result's ``refused`` says which commit was refused and why; the
    refused commits are written as a bundle to ``keep_refused`` (never to a ref). Raises GateRefused
    (every reason found) when nothing can land; the received bundle is copied to ``keep_refused`` then.
    """
    git = git or HostGit(repo, limits=GitLimits(policy.git_memory_bytes))
    ref = f"refs/heads/{branch}"
    if not git.valid_branch_name(branch):
        raise UsageError(
            f"{branch!r} is not a valid branch name",
            hint="pass the session's branch, e.g. claude/session-3",
        )
    objects = Path(_out(git.run("rev-parse", "--path-format=absolute", "--git-path", "objects")))

    def refuse(reasons: Sequence[str]) -> GateRefused:
        kept = _keep_received(bundle, keep_refused, policy) if keep_refused is not None else None
        return GateRefused(reasons, bundle=kept or bundle, branch=branch)

    with tempfile.TemporaryDirectory(prefix="containai-gate-") as tmp:
        if git.run_as:
            # The quarantine is written by git running as the repository's owner (see owner_identity).
            os.chown(tmp, git.run_as["user"], git.run_as["group"])
        quarantine = Path(tmp) / "quarantine.git"
        verdict = _validate(git, bundle, ref, base, policy, quarantine, objects, refuse)
        if verdict.refused is None:
            return _land(git, quarantine, branch, base, verdict.tip, now, move_worktree=move_worktree)
        refusal = _keep_refused(git, quarantine, ref, verdict, verdict.refused, Path(tmp), keep_refused)
        git.run("update-ref", ref, verdict.landed, git_dir=quarantine)
        landed = _land(git, quarantine, branch, base, verdict.landed, now, move_worktree=move_worktree)
        return dataclasses.replace(landed, refused=refusal)


def _validate(
    git: HostGit,
    bundle: Path,
    ref: str,
    base: str,
    policy: GatePolicy,
    quarantine: Path,
    host_objects: Path,
    refuse: Callable[[Sequence[str]], GateRefused],
) -> _Verdict:
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
        object_format = git.object_format
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
            or git.run("cat-file", "-e", f"{base}^{{commit}}", check=False).returncode
        ):
            reasons.append(f"base {_show(base)}: not a commit in the host repository")
        present = _object_info(git, None, header.prerequisites)
        for sha in header.prerequisites:
            if present.get(sha, ("",))[0] != "commit":
                reasons.append(f"prerequisite {sha}: not a commit in the host repository")
        if reasons:
            # Nothing below can run without the branch, the base and every prerequisite.
            raise refuse(reasons)

        # Sizes first, read by us: a few KiB of delta can ask index-pack for gigabytes.
        stream.seek(header.pack_offset)
        try:
            scan_pack(stream, max_object_bytes=policy.max_blob_bytes, object_format=header.object_format)
        except PackTooLarge as exc:
            # Checked before git sees the pack, so by object, not by path: git has not named them yet.
            raise refuse(
                [f"the bundle's pack is over the blob limit (CONTAINAI_GATE_MAX_BLOB): {exc}"]
            ) from None
        except PackRefused as exc:
            raise refuse([f"the bundle's pack is unusable: {exc}"]) from None

        # An empty --template: the quarantine gets no sample hooks or info/exclude, only what we write.
        git.run(
            "init", "--bare", "--quiet", "--template=", f"--object-format={object_format}", str(quarantine),
        )  # fmt: skip
        # Reads fall through to the host's objects (the thin pack's bases); writes stay in quarantine.
        (quarantine / "objects" / "info").mkdir(parents=True, exist_ok=True)
        (quarantine / "objects" / "info" / "alternates").write_text(f"{host_objects}\n", encoding="utf-8")

        # index-pack reads the file descriptor, not Python's buffer: position the descriptor itself.
        os.lseek(stream.fileno(), header.pack_offset, os.SEEK_SET)
        indexed = git.run(
            "index-pack", "--stdin", "--fix-thin", "--threads=1", f"--max-input-size={policy.max_bundle_bytes}",
            git_dir=quarantine, stdin=stream, check=False, timeout=PACK_TIMEOUT,
        )  # fmt: skip
        if indexed.returncode != 0:
            raise refuse([f"the bundle's pack is unusable: {failure(indexed)}"])

    # git's own fsck rules, on exactly the objects the bundle carried (git fsck would walk the whole host).
    pack = quarantine / "objects" / "pack" / f"pack-{indexed.stdout.decode().split()[-1]}.pack"
    verify = git.run(
        "index-pack",
        _STRICT,
        "--threads=1",
        "-o",
        str(quarantine / "verify.idx"),
        str(pack),
        git_dir=quarantine,
        check=False,
        timeout=PACK_TIMEOUT,
    )
    # Listed last: the gate's own reasons name paths, fsck's name object ids.
    fsck_reasons = _fsck_reasons(verify.stderr) if verify.returncode != 0 else []

    if _out(git.run("cat-file", "-t", tip, git_dir=quarantine, check=False)) != "commit":
        raise refuse([*reasons, f"{ref}: {tip} is not a commit in the bundle", *fsck_reasons])
    if git.run("merge-base", "--is-ancestor", base, tip, git_dir=quarantine, check=False).returncode != 0:
        reasons.append(f"{ref}: {tip[:12]} does not descend from the session's base {base[:12]}")

    excluded = "".join(f"^{sha}\n" for sha in (base, *header.prerequisites))
    new_commits = _out(
        git.run("rev-list", "--stdin", git_dir=quarantine, input_bytes=f"{tip}\n{excluded}".encode())
    ).split()
    entries = list(_diff_entries(git, quarantine, new_commits))
    found = _check_entries(git, quarantine, base, entries, policy)
    found += _attribute(git, quarantine, new_commits, entries, fsck_reasons)
    if reasons or any(not commit for commit, _ in found):
        # The whole bundle is at fault (its refs, its history, an object no new commit brings).
        raise refuse(list(dict.fromkeys([*reasons, *(reason for _, reason in found)])))
    if not found:
        git.run("update-ref", ref, tip, git_dir=quarantine)
        return _Verdict(tip, tip)
    landed, refused = _landable(git, quarantine, tip, excluded, {commit for commit, _ in found})
    ordered = [reason for commit, reason in found if commit == refused]
    ordered += [reason for commit, reason in found if commit != refused]
    if landed not in new_commits:  # the first commit is refused: nothing lands
        raise refuse(list(dict.fromkeys(ordered)))
    git.run("update-ref", ref, tip, git_dir=quarantine)
    return _Verdict(tip, landed, refused, tuple(dict.fromkeys(ordered)))


@dataclass(frozen=True)
class _Verdict:
    tip: str  # the branch's tip in the bundle
    landed: str  # what may land: the tip, or the last commit before the first refused one
    refused: str | None = None  # the first refused commit
    reasons: tuple[str, ...] = ()


_OBJECT_ID = re.compile(r"object ([0-9a-f]{40}(?:[0-9a-f]{24})?)\b")


def _attribute(
    git: HostGit, quarantine: Path, commits: Sequence[str], entries: Sequence[_Entry], fsck: Sequence[str]
) -> list[tuple[str, str]]:
    """(commit, reason) for each fsck finding: the first new commit that holds the object it names.

    A finding that no new commit holds is the bundle's as a whole (commit "").
    """
    if not fsck:
        return []
    holder: dict[str, str] = {}
    # Oldest first, so an object is charged to the first commit that brings it.
    ordered = list(reversed(commits))
    trees = git.run(
        "rev-list", "--no-walk=unsorted", "--stdin", "--format=%T", git_dir=quarantine,
        input_bytes="".join(f"{c}\n" for c in ordered).encode(),
    ).stdout.decode().split()  # fmt: skip
    for word, tree in zip(trees[1::3], trees[2::3], strict=True):
        holder.setdefault(word, word)
        holder.setdefault(tree, word)
    order = {commit: n for n, commit in enumerate(ordered)}
    for entry in sorted(entries, key=lambda e: order.get(e.commit, 0)):
        holder.setdefault(entry.sha, entry.commit)
    found = []
    for reason in fsck:
        match = _OBJECT_ID.search(reason)
        found.append((holder.get(match.group(1), "") if match else "", reason))
    return found


def _landable(git: HostGit, quarantine: Path, tip: str, excluded: str, bad: set[str]) -> tuple[str, str]:
    """The last commit on the first-parent line before the first one that brings a refused commit,
    and that refused commit (the first such one, oldest first)."""
    line = _out(
        git.run(
            "rev-list", "--first-parent", "--reverse", "--parents", "--stdin", git_dir=quarantine,
            input_bytes=f"{tip}\n{excluded}".encode(),
        )
    ).splitlines()  # fmt: skip
    landed = ""
    for row in line:
        commit, *parents = row.split()
        landed = landed or parents[0]
        if parents == [landed]:
            brought = [commit]
        else:  # a merge brings in its other parents' new commits too
            brought = _out(
                git.run(
                    "rev-list", "--reverse", "--stdin", git_dir=quarantine,
                    input_bytes=f"{commit}\n^{landed}\n{excluded}".encode(),
                )
            ).split()  # fmt: skip
        refused = next((c for c in brought if c in bad), None)
        if refused is not None:
            return landed, refused
        landed = commit
    raise AssertionError("a refused commit is not on the branch")  # every new commit is reachable from tip


def _keep_refused(
    git: HostGit,
    quarantine: Path,
    ref: str,
    verdict: _Verdict,
    refused: str,
    scratch: Path,
    keep: Path | None,
) -> Refusal:
    """The refused commits (what ``ref`` has beyond what landed) as a bundle at ``keep``."""
    count = _count(git, verdict.tip, verdict.landed, git_dir=quarantine)
    subject = git.text("log", "-1", "--format=%s", refused, git_dir=quarantine, check=False)
    kept = None
    if keep is not None:
        # Written by git as the repository's owner into the quarantine's folder, then moved by us.
        written = scratch / "refused.bundle"
        git.run(
            "bundle", "create", "--quiet", str(written), ref, f"^{verdict.landed}",
            git_dir=quarantine, timeout=PACK_TIMEOUT,
        )  # fmt: skip
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(written, keep)
        kept = keep
    return Refusal(
        commit=refused,
        subject=printable(subject, limit=200),
        reasons=verdict.reasons,
        commits=count,
        tip=verdict.tip,
        bundle=kept,
    )


def _keep_received(bundle: Path, keep: Path, policy: GatePolicy) -> Path | None:
    """A copy of the refused bundle as received, at ``keep``; None when it is not a file we keep."""
    try:
        fd = os.open(bundle, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > policy.max_bundle_bytes:
            return None
        keep.parent.mkdir(parents=True, exist_ok=True)
        with keep.open("wb") as target:
            shutil.copyfileobj(source, target)
    return keep


def _filters_off(git: HostGit) -> tuple[str, ...]:
    """``-c`` pairs that switch off every filter driver the repository configures.

    Checking files out runs a driver's smudge command, and ``git status`` its clean command; the
    agent's commits can name any driver in a ``.gitattributes``. System and global config are not
    read at all (``hostgit.clean_env``), so the repository's own config is all there is to switch off.
    """
    listed = git.run("config", "--name-only", "--get-regexp", r"^filter\.", check=False)
    drivers = {
        name[len("filter.") :].rpartition(".")[0]
        for name in listed.stdout.decode("utf-8", "surrogateescape").split()
    }
    pairs: list[str] = []
    for driver in sorted(d for d in drivers if d):
        for key, value in (("clean", ""), ("smudge", ""), ("process", ""), ("required", "false")):
            pairs += ["-c", f"filter.{driver}.{key}={value}"]
    return tuple(pairs)


def _fast_forward_checkout(git: HostGit, branch: str, existing: str, tip: str) -> str | None:
    """Move the checked-out ``branch`` and its work tree together from ``existing`` to ``tip``.

    None when done, else why not. Only a clean work tree moves (untracked files git would overwrite
    stop it too); hooks, fsmonitor (``hostgit.HARDENING``) and filter drivers are off throughout.
    """
    off = (*_filters_off(git), *("-c", "merge.autoStash=false"), *("-c", "rebase.autoStash=false"))
    head = _out(git.run("symbolic-ref", "--quiet", "HEAD", check=False))
    if head != f"refs/heads/{branch}":
        return f"{branch} is no longer checked out in {git.repo}"
    status = git.run(
        "status", "--porcelain=v1", "-z", "--untracked-files=no", "--ignore-submodules=none",
        config=off, check=False,
    )  # fmt: skip
    if status.returncode != 0:
        return f"git status failed in {git.repo}: {_last_line(status.stderr)}"
    changed = [entry[3:] for entry in status.stdout.decode("utf-8", "backslashreplace").split("\0") if entry]
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return f"{branch} has uncommitted changes on the host ({shown})"
    merged = git.run(
        "merge",
        "--ff-only",
        "--no-stat",
        "--quiet",
        "--no-edit",
        tip,
        config=off,
        check=False,
        timeout=PACK_TIMEOUT,
    )
    if merged.returncode != 0:
        return f"bringing {branch}'s work tree forward failed: {_last_line(merged.stderr)}"
    if git.commit_of(f"refs/heads/{branch}") != tip:
        return f"{branch} changed on the host during the import"
    return None


def _count(git: HostGit, tip: str, since: str, *, git_dir: Path | None = None) -> int:
    return int(_out(git.run("rev-list", "--count", tip, f"^{since}", git_dir=git_dir)))


def _land(
    git: HostGit,
    quarantine: Path,
    branch: str,
    base: str,
    tip: str,
    now: Callable[[], datetime],
    *,
    move_worktree: bool = False,
) -> ImportResult:
    ref = f"refs/heads/{branch}"
    existing = git.commit_of(ref)
    if existing == tip:
        return ImportResult(branch=branch, tip=tip, commits=0, diverged=False, created=False)

    # Objects only: no refspec destination, no FETCH_HEAD. The ref moves below, with an old-value check.
    git.run(
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        str(quarantine),
        ref,
        timeout=PACK_TIMEOUT,
    )

    zero = git.zero_id
    reason: str | None = None
    moved = existing is not None and bool(
        git.run("merge-base", "--is-ancestor", existing, tip, check=False).returncode
    )
    worktrees = git.worktrees_with(ref)
    if moved:
        reason = f"{branch} has moved on the host since the session started"
    elif worktrees and (
        not move_worktree or existing is None or [w.resolve() for w in worktrees] != [git.repo.resolve()]
    ):
        where = ", ".join(str(w) for w in worktrees)
        reason = f"{branch} is checked out on the host (in {where}); moving it would change that work tree"
    elif worktrees and existing is not None:
        reason = _fast_forward_checkout(git, branch, existing, tip)
        if reason is None:
            return ImportResult(
                branch=branch,
                tip=tip,
                commits=_count(git, tip, existing),
                diverged=False,
                created=False,
                worktree_updated=True,
            )
    if reason is None:
        message = (
            "containai: import agent work (fast-forward)" if existing else "containai: import agent work"
        )
        if git.run("update-ref", "-m", message, ref, tip, existing or zero, check=False).returncode:
            raise HostToolError(
                f"{branch} changed on the host during the import", hint="run the import again"
            )
        return ImportResult(
            branch=branch,
            tip=tip,
            commits=_count(git, tip, existing or base),
            diverged=False,
            created=existing is None,
        )

    stamp = now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 100):
        name = f"{branch}-diverged-{stamp}" + (f"-{n}" if n > 1 else "")
        message = f"containai: import agent work ({reason})"
        if git.run("update-ref", "-m", message, f"refs/heads/{name}", tip, zero, check=False).returncode == 0:
            return ImportResult(
                branch=name,
                tip=tip,
                commits=_count(git, tip, base),
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
