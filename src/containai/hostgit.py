"""The host's git: one hardened way to run it on the user's repository, for the gate, branches and the CLI.

Every call runs with a clean environment (none of the caller's ``GIT_*`` variables), no system or
global config, hooks, fsmonitor and replace refs off, no network protocol, a timeout, and, when we are
root and the repository is not, as the repository's owner. Only two things of the user's are read,
each on purpose and narrowly (see ``HostGit.user_config`` and ``HostGit.trusted_directories``).

``HostGit`` is bound to one repository (or a folder in one). It is the port the session and the gate
take, so a unit test can hand in a subclass that scripts the answers.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

from containai.errors import HostToolError
from containai.text import last_line

__all__ = [
    "FSCK_ERRORS",
    "HEX_LENGTH",
    "USER_KEYS",
    "GitLimits",
    "HostGit",
    "clean_env",
    "failure",
    "owner_identity",
]

DEFAULT_TIMEOUT = 120.0  # seconds; a query on a local repository takes milliseconds
PACK_TIMEOUT = 1800.0  # index-pack, fetch and checkout of a bundle near the gate's size limit
DEFAULT_MEMORY = 2 * 2**30  # bytes of address space for each host git process


@dataclass(frozen=True)
class GitLimits:
    """What each host git process may use; its children (fetch runs index-pack) inherit the same.

    ``memory_bytes`` is the address space (RLIMIT_AS). The CPU limit (RLIMIT_CPU) is each call's
    wall-clock timeout: one pack thread makes CPU time no more than wall time, and unlike the
    timeout, it also stops a child that outlives a killed parent. ``None`` switches both off.
    """

    memory_bytes: int | None = DEFAULT_MEMORY

    def config(self) -> tuple[str, ...]:
        """``-c`` pairs that keep git inside the limit: one pack thread, pack mappings well below it."""
        pairs = ["pack.threads=1"]
        if self.memory_bytes is not None:
            # git maps pack files in windows (1 GiB each by default, up to 8 GiB or more in all) and
            # dies when a mapping fails: keep the windows small and their total a fraction of the limit.
            pairs += [
                f"core.packedGitWindowSize={max(self.memory_bytes // 64, 1 << 20)}",
                f"core.packedGitLimit={max(self.memory_bytes // 4, 1 << 20)}",
                f"core.deltaBaseCacheLimit={max(self.memory_bytes // 32, 1 << 20)}",
            ]
        return tuple(arg for pair in pairs for arg in ("-c", pair))

    def preexec(self, timeout: float) -> Callable[[], None] | None:
        """A ``preexec_fn`` that sets the limits in the child, before git runs; None when off."""
        if self.memory_bytes is None:
            return None
        # Built here, in the parent: the child only makes two system calls (fork-safe).
        memory = (self.memory_bytes, self.memory_bytes)
        cpu_seconds = max(1, math.ceil(timeout))
        cpu = (cpu_seconds, cpu_seconds + 5)  # SIGXCPU at the soft limit, SIGKILL at the hard one

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, memory)
            resource.setrlimit(resource.RLIMIT_CPU, cpu)

        return limit


HEX_LENGTH = {"sha1": 40, "sha256": 64}

# fsck findings that are only warnings by default but are how a tree smuggles a path into .git.
FSCK_ERRORS = (
    "hasDotgit",
    "hasDot",
    "hasDotdot",
    "fullPathname",
    "zeroPaddedFilemode",
    "emptyName",
    "badFilemode",
    "nullSha1",
)

# Every host git call carries these. They pin behaviour that a repository (the user's, the gate's
# quarantine, or anything reachable through one) could otherwise turn into command execution or
# network access.
HARDENING = (
    "--no-replace-objects",
    *("-c", "core.hooksPath=/dev/null"),
    *("-c", "core.fsmonitor=false"),
    *("-c", "core.attributesFile=/dev/null"),
    *("-c", "core.protectNTFS=true"),
    *("-c", "core.protectHFS=true"),
    *("-c", "protocol.allow=never"),
    # The only transport used is a local path to the gate's own quarantine repository.
    *("-c", "protocol.file.allow=always"),
    *("-c", "gc.auto=0"),
    *("-c", "maintenance.auto=false"),
    *("-c", "fetch.recurseSubmodules=false"),
    *("-c", "submodule.recurse=false"),
    # The gate's landing fetch from the quarantine re-checks what it receives (a file:// fetch does fsck).
    *("-c", "transfer.fsckObjects=true"),
    *(arg for key in ("fsck", "fetch.fsck") for msg in FSCK_ERRORS for arg in ("-c", f"{key}.{msg}=error")),
)

# The user's config keys ContainAI reads (for the agent's commits); nothing else of it is read.
USER_KEYS = frozenset({"user.name", "user.email"})

# Where the user's own config is, when reading it on purpose: these variables name it, the rest of
# GIT_* stays out.
_CONFIG_LOCATION = ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM")


def clean_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without any ``GIT_*`` variable, and with system and global config off."""
    env = {key: value for key, value in environ.items() if not key.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_ATTR_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_NO_REPLACE_OBJECTS="1",
        GIT_LFS_SKIP_SMUDGE="1",
        # `git status` must not refresh (write) the user's index behind their back.
        GIT_OPTIONAL_LOCKS="0",
        LC_ALL="C",
    )
    return env


def owner_identity(repo: Path) -> dict[str, Any]:
    """``subprocess`` arguments to run as the repository's owner when we are root and it is not ours.

    Otherwise root would leave root-owned refs and objects in a user's .git, which breaks that user's
    own git later (and an overlay workspace, whose agent runs as the owner). Empty otherwise.
    """
    if os.geteuid() != 0:
        return {}
    try:
        stat = repo.stat()
    except OSError:
        return {}
    if stat.st_uid == 0:
        return {}
    return {"user": stat.st_uid, "group": stat.st_gid, "extra_groups": []}


def _last_line(stderr: bytes) -> str:
    return last_line(stderr)  # git's words may quote the agent's (paths, refs): printable


def failure(result: subprocess.CompletedProcess[bytes]) -> str:
    """Why a git call failed: its last words, or the signal (a limit) that stopped it."""
    if result.returncode == -signal.SIGXCPU:
        return "stopped at its CPU time limit"
    if result.returncode < 0:
        return f"killed by {signal.Signals(-result.returncode).name}"
    return _last_line(result.stderr) or f"exit {result.returncode}"


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


class HostGit:
    """The host's git, bound to ``repo``: a repository, or a folder in one (see ``toplevel``)."""

    def __init__(
        self,
        repo: Path,
        *,
        environ: Mapping[str, str] | None = None,
        run_as: Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        limits: GitLimits = GitLimits(),
    ) -> None:
        self.repo = repo
        self._environ = os.environ if environ is None else environ
        self.run_as: Mapping[str, Any] = owner_identity(repo) if run_as is None else dict(run_as)
        self.timeout = timeout
        self.limits = limits

    def __repr__(self) -> str:
        return f"HostGit({str(self.repo)!r})"

    # -----------------------------------------------------------------------------------------------------
    # Running

    @cached_property
    def executable(self) -> str:
        exe = shutil.which("git", path=self._environ.get("PATH"))
        if exe is None:
            raise HostToolError("git is not installed", hint="install it: `sudo apt-get install git`")
        return exe

    def env(self) -> dict[str, str]:
        return clean_env(self._environ)

    def argv(self, *args: str, git_dir: Path | None = None, config: Sequence[str] = ()) -> list[str]:
        """The command line for ``git args``: in ``repo``, or in the bare ``git_dir`` (the gate's own)."""
        where = (f"--git-dir={git_dir}",) if git_dir is not None else ("-C", str(self.repo))
        trusted = [arg for path in self.trusted_directories for arg in ("-c", f"safe.directory={path}")]
        return [self.executable, *HARDENING, *self.limits.config(), *trusted, *config, *where, *args]

    def run(
        self,
        *args: str,
        git_dir: Path | None = None,
        input_bytes: bytes | None = None,
        stdin: BinaryIO | None = None,
        check: bool = True,
        config: Sequence[str] = (),
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``git args`` hardened; with ``check``, raise HostToolError with git's own last words.

        ``config`` adds ``-c`` pairs of the caller's (e.g. the gate switching filter drivers off).
        """
        return self._run(
            self.argv(*args, git_dir=git_dir, config=config),
            verb=args[0] if args else "",
            env=self.env(),
            cwd=git_dir or self.repo,
            input_bytes=input_bytes,
            stdin=stdin,
            check=check,
            timeout=self.timeout if timeout is None else timeout,
        )

    def _run(
        self,
        argv: list[str],
        *,
        verb: str,
        env: Mapping[str, str],
        cwd: Path,
        input_bytes: bytes | None = None,
        stdin: BinaryIO | None = None,
        check: bool = True,
        timeout: float,
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            # Its own process group, so that a timeout ends git's children too (fetch's index-pack).
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if input_bytes is not None else stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=self.limits.preexec(timeout),  # two setrlimit calls: fork-safe
                **self.run_as,
            )
        except OSError as exc:  # cwd gone, or not reachable as the owner
            raise HostToolError(f"git {verb} could not run in {self.repo}: {exc.strerror}") from None
        with process:
            try:
                stdout, stderr = process.communicate(input_bytes, timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                raise HostToolError(
                    f"git {verb} did not finish within {timeout:g} seconds in {self.repo}",
                    hint="check that the repository is on a local, responsive disk, then try again",
                ) from None
            except BaseException:
                _kill_group(process)
                raise
        result = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise HostToolError(f"git {verb} failed in {self.repo}: {failure(result)}")
        return result

    def text(self, *args: str, check: bool = True, **kwargs: Any) -> str:
        """``git args``'s output, decoded and stripped (empty when it failed and ``check`` is off)."""
        result = self.run(*args, check=check, **kwargs)
        if result.returncode != 0:
            return ""
        return result.stdout.decode("utf-8", "surrogateescape").strip()

    def ok(self, *args: str, **kwargs: Any) -> bool:
        """Whether ``git args`` exits 0 (for questions git answers with its exit code)."""
        return self.run(*args, check=False, **kwargs).returncode == 0

    # -----------------------------------------------------------------------------------------------------
    # What stays the user's

    @cached_property
    def trusted_directories(self) -> tuple[str, ...]:
        """The user's ``safe.directory`` values, which git only honours from protected config.

        System and global config are off for every other call, so without these a repository the user
        vouched for (one they do not own) would be refused as of "dubious ownership". They come from
        the user's system and global config only, never the repository's, and are passed on as
        ``-c`` (command-line config is protected too). Not needed when root runs as the owner.
        """
        if os.geteuid() == 0:
            return ()
        argv = [self.executable, "config", "--show-scope", "--get-all", "safe.directory"]
        result = self._run(
            argv, verb="config", env=self._user_env(), cwd=Path("/"), check=False, timeout=self.timeout
        )
        values = []
        for line in result.stdout.decode("utf-8", "surrogateescape").splitlines():
            scope, _, value = line.partition("\t")
            if scope in ("system", "global"):
                values.append(value)
        return tuple(values)

    def user_config(self, key: str) -> str | None:
        """The user's value of ``key`` (one of ``USER_KEYS``) as plain git would see it in ``repo``.

        The agent's commits carry the user's name and e-mail, which live in the user's global config
        (or the repository's own). So this one read runs with the user's system and global config on,
        as ``git config --get`` (which only reads files, it runs nothing), and for these keys only.
        """
        if key not in USER_KEYS:
            raise ValueError(f"{key} is not one of the user's config keys ContainAI reads")
        argv = [self.executable, *HARDENING, "-C", str(self.repo), "config", "--get", key]
        result = self._run(
            argv, verb="config", env=self._user_env(), cwd=self.repo, check=False, timeout=self.timeout
        )
        value = result.stdout.decode("utf-8", "surrogateescape").strip()
        return value if result.returncode == 0 and value else None

    def _user_env(self) -> dict[str, str]:
        env = self.env()
        for key in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM"):
            del env[key]
        env.update({key: self._environ[key] for key in _CONFIG_LOCATION if key in self._environ})
        return env

    # -----------------------------------------------------------------------------------------------------
    # Questions and ref updates

    def toplevel(self) -> Path | None:
        """The top of the work tree ``repo`` is in; None when it is in none."""
        result = self.run("rev-parse", "--show-toplevel", check=False)
        top = result.stdout.decode("utf-8", "surrogateescape").strip()
        return Path(top) if result.returncode == 0 and top else None

    @cached_property
    def object_format(self) -> str:
        """``sha1`` or ``sha256``."""
        found = self.text("rev-parse", "--show-object-format")
        if found not in HEX_LENGTH:
            raise HostToolError(
                f"{self.repo} uses the object format {found!r}, which ContainAI does not know"
            )
        return found

    @property
    def zero_id(self) -> str:
        """The all-zero object id of the repository's format: "no ref" to ``update-ref``."""
        return "0" * HEX_LENGTH[self.object_format]

    def commit_of(self, rev: str) -> str | None:
        return self.text("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False) or None

    def branch_sha(self, branch: str) -> str | None:
        return self.commit_of(f"refs/heads/{branch}")

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self.ok("merge-base", "--is-ancestor", older, newer)

    def valid_branch_name(self, name: str) -> bool:
        """Whether ``name`` may name a branch; a git that cannot run at all raises instead."""
        if name.startswith("-") or name in ("@", "HEAD") or "@{" in name:
            return False
        # Checked as a full ref, not with --branch, which would expand "@" or "@{-1}" to other branches.
        result = self.run("check-ref-format", f"refs/heads/{name}", check=False)
        if result.returncode not in (0, 1):  # 1 is "not a valid name"; anything else is git failing
            raise HostToolError(f"git check-ref-format failed in {self.repo}: {_last_line(result.stderr)}")
        return result.returncode == 0

    def create_branch(self, branch: str, sha: str, *, message: str) -> bool:
        """Create ``refs/heads/branch`` at ``sha`` only if it does not exist (atomic); False if it did."""
        return self.ok("update-ref", "-m", message, f"refs/heads/{branch}", sha, self.zero_id)

    def is_object_id(self, text: str) -> bool:
        """Whether ``text`` is a full object id of this repository's format (the zero id included)."""
        return len(text) == HEX_LENGTH[self.object_format] and all(c in "0123456789abcdef" for c in text)

    def delete_branch_if_at(self, branch: str, sha: str) -> bool:
        """Delete ``branch`` only if it points at ``sha``."""
        # `update-ref -d` takes an empty or all-zero old value as "whatever it points at": never pass one.
        if not self.is_object_id(sha) or sha == self.zero_id:
            return False
        return self.ok("update-ref", "-d", f"refs/heads/{branch}", sha)

    def worktrees_with(self, ref: str) -> list[Path]:
        """The work trees (the main one included) that have ``ref`` checked out."""
        listed = self.run("worktree", "list", "--porcelain", "-z")
        out = listed.stdout.decode("utf-8", "surrogateescape")
        found: list[Path] = []
        for entry in out.split("\0\0"):
            fields = entry.strip("\0").split("\0")
            path = next((f[len("worktree ") :] for f in fields if f.startswith("worktree ")), None)
            if path is not None and f"branch {ref}" in fields:
                found.append(Path(path))
        return found
