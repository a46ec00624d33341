"""ContainAI's exceptions and exit codes.

Every failure ContainAI causes or detects is a ``ContainAIError``; every entry point (the CLI, the
launchers, both brokers) catches the root in one place (``containai.cli.app.guarded``), prints
``error: <message>`` and ``hint: <fix>``, and exits with the error's ``exit_code``.

Exit codes are defined once, below (``EXIT_*`` and ``EXIT_CODES``, which docs/cli-reference.md is
generated from): 0 success; N the agent's own code, passed through; 1 doctor's "not ready"; 75 the
work was kept in the session, not brought home; 125 ContainAI could not run the agent; 130
interrupted. Why these: an agent's own code must pass through, so ContainAI's stay clear of the
codes programs commonly use (1, 2) and of the shell's (126 cannot execute, 127 not found, 128+N a
signal); 125 is `docker run`'s convention for "the runner failed", 75 is sysexits' EX_TEMPFAIL.

    ContainAIError
    ├── UsageError              bad input from the user (flag, path, name)
    ├── ConfigError             a settings file or environment value that cannot be used
    ├── NotAvailableError       a command that this version does not provide yet
    ├── EngineError             talking to the container engine
    │   ├── EngineUnavailable   no engine answers where we looked
    │   ├── EngineAPIError      the engine answered with an error
    │   └── ExecTimedOut        a command in a container ran past its time limit, and was stopped
    ├── ImageError              building or finding images
    │   ├── ImageMissing        an image a command needs is not built
    │   ├── BootstrapError      debootstrap of the base root filesystem failed
    │   └── BuildError          a build step failed (carries the engine's message)
    ├── HostToolError           a host program (git, tar, debootstrap) is missing or failed
    ├── SessionError            a session could not be set up, or its work not brought back
    ├── GateRefused             an agent's bundle failed the git gate (carries every reason)
    └── BrokerError             the secret broker refused or could not do something
        ├── CapabilityRefused   a capability token was refused (carries the reason, never the token)
        │   ├── TokenMalformed  not a token of ours: bad shape, encoding, size or fields
        │   ├── TokenForged     the MAC does not verify (wrong key, or any changed byte)
        │   ├── TokenExpired    past its expiry on the broker's clock
        │   ├── WrongSession    presented for a session it was not issued to
        │   ├── WrongContainer  presented for a container it was not issued to
        │   ├── WrongConsumer   presented by another MCP server's uid than its own
        │   └── TokenNotLive    already redeemed, revoked, superseded, or from an earlier broker run
        ├── BundleRefused       a sealed bundle does not open with its capability (tampered or swapped)
        ├── PeerRefused         a socket peer whose uid may not use the broker (or that operation)
        ├── SecretUnavailable   a secret a capability asks for is not in the host store
        └── AuditUnavailable    the audit could not be written, so the broker refused (fail closed)
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_NOT_READY = 1
EXIT_AUDIT_BROKEN = 1  # `audit verify`: a check that failed, like doctor's
EXIT_WORK_KEPT = 75
EXIT_CONTAINAI = 125
EXIT_INTERRUPTED = 130

EXIT_CODES: tuple[tuple[str, str], ...] = (
    (str(EXIT_OK), "The agent (or command) succeeded, and its work, if any, was brought home."),
    ("N", "A session's agent exited with N: its own exit code passes through unchanged."),
    (
        str(EXIT_NOT_READY),
        "`containai doctor`: something blocks launching; `selftest`: a case broke; `mcp approve`: you "
        "declined; `audit verify`: the broker's audit was edited, cut or reordered.",
    ),
    (
        str(EXIT_WORK_KEPT),
        "The agent finished but its work was NOT brought home: the session is kept, and "
        "`remove-agent NAME` retries (sysexits' EX_TEMPFAIL). Also remove-agent's code when it keeps "
        "a session for that reason. If the agent itself failed, its code wins; "
        "`--json`'s `kept` says it either way.",
    ),
    (
        str(EXIT_CONTAINAI),
        "ContainAI could not run the agent, or a command failed: bad input, no engine, a missing "
        "image, a refused setting (`docker run`'s convention). One `error:` line and a `hint:` line.",
    ),
    (str(EXIT_INTERRUPTED), "Interrupted (Ctrl-C): the shell's 128 + SIGINT."),
)


class ContainAIError(Exception):
    """Root of ContainAI's errors: a one-line message and, where we know it, the fix."""

    exit_code = EXIT_CONTAINAI

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ContainAIError):
    pass


class ConfigError(ContainAIError):
    pass


class NotAvailableError(ContainAIError):
    def __init__(self, command: str, *, planned: str) -> None:
        super().__init__(
            f"{command} is not available in this version of ContainAI yet ({planned}).",
            hint="run `containai doctor` to check the engine and images; `containai images build` builds them",
        )
        self.command = command


class EngineError(ContainAIError):
    pass


class EngineUnavailable(EngineError):
    pass


class EngineAPIError(EngineError):
    pass


class ExecTimedOut(EngineError):
    """A command run with ``ExecSpec.timeout`` did not end in time: it was killed, and the host
    stopped waiting for it. Carries the command's first word and the limit, in seconds."""

    def __init__(self, ref: str, program: str, seconds: float) -> None:
        super().__init__(f"{program} in {ref} ran past its limit of {seconds:g} s and was stopped")
        self.ref = ref
        self.program = program
        self.seconds = seconds


class ImageError(ContainAIError):
    pass


class ImageMissing(ImageError):
    def __init__(self, tag: str, *, build_hint: str) -> None:
        super().__init__(f"image {tag} is not built", hint=build_hint)
        self.tag = tag


class BootstrapError(ImageError):
    pass


class BuildError(ImageError):
    def __init__(self, part: str, detail: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"building {part} failed: {detail}",
            hint=hint or "the full build log is in the ContainAI log file (`containai doctor` prints where)",
        )
        self.part = part
        self.detail = detail


class HostToolError(ContainAIError):
    pass


class SessionError(ContainAIError):
    pass


class GateRefused(ContainAIError):
    """The git gate refused an agent's bundle; nothing reached the host repository."""

    def __init__(self, reasons: Sequence[str], *, bundle: Path, branch: str) -> None:
        self.reasons = tuple(reasons)
        self.bundle = bundle
        self.branch = branch
        more = f" (and {len(self.reasons) - 1} more)" if len(self.reasons) > 1 else ""
        first = self.reasons[0] if self.reasons else "no reason given"
        super().__init__(
            f"refused to import {bundle} into {branch}: {first}{more}",
            hint="nothing was written to the repository and the agent's work is kept in its container; "
            f"inspect the bundle with `git bundle list-heads {shlex.quote(str(bundle))}`",
        )


class BrokerError(ContainAIError):
    pass


class CapabilityRefused(BrokerError):
    """A capability token was refused; ``reason`` is a short fixed word that the audit records too."""

    reason = "refused"

    def __init__(self, detail: str, *, hint: str | None = None) -> None:
        # The message never quotes the token: a refused token may still be a live one being replayed.
        super().__init__(f"capability refused ({self.reason}): {detail}", hint=hint)
        self.detail = detail


class TokenMalformed(CapabilityRefused):
    reason = "malformed"


class TokenForged(CapabilityRefused):
    reason = "forged"


class TokenExpired(CapabilityRefused):
    reason = "expired"


class WrongSession(CapabilityRefused):
    reason = "wrong-session"


class WrongContainer(CapabilityRefused):
    reason = "wrong-container"


class WrongConsumer(CapabilityRefused):
    reason = "wrong-consumer"


class TokenNotLive(CapabilityRefused):
    reason = "not-live"


class BundleRefused(BrokerError):
    pass


class PeerRefused(BrokerError):
    def __init__(self, *, uid: int, pid: int, op: str) -> None:
        super().__init__(
            f"uid {uid} (pid {pid}) may not {op} through this broker socket",
            hint="only the uids given with --allow-uid may redeem; issuing is for the broker's own uid on its admin socket",
        )
        self.uid = uid
        self.pid = pid
        self.op = op


class SecretUnavailable(BrokerError):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        super().__init__(
            f"no value in the host secret store for {', '.join(self.names)}",
            hint="store the secret on the host first; the broker never reads secrets from the agent's side",
        )


class AuditUnavailable(BrokerError):
    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"cannot write the broker audit {path}: {detail}; refusing to issue or redeem",
            hint="free space or fix permissions on the audit file's filesystem; the broker does nothing it cannot record",
        )
        self.path = path
        self.detail = detail
