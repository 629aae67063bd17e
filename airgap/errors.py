"""The error tree. Every failure a user can meet is one of these, and each maps to one exit code.

Adapters turn foreign exceptions (OSError, docker.errors, subprocess failures) into these once,
at their boundary, so that the CLI can print one line — what failed, why, what to do — and exit
with the documented code without a traceback.
"""

from __future__ import annotations


class AirgapError(Exception):
    """Base of every expected failure. ``hint`` says what the user can do about it."""

    exit_code = 5
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The single line a user sees: never more, so that logs and pipelines stay readable."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" — {' '.join(self.hint.split())}"
        return text


class AnswerIsNo(AirgapError):
    """The tool worked and the answer is no (policy findings, smoke-test mismatch)."""

    exit_code = 1
    kind = "failed"


class UsageError(AirgapError):
    """The command line itself is wrong (exit 2): fixing the arguments, not the input, is the remedy."""

    exit_code = 2
    kind = "usage"


class IntegrityError(AirgapError):
    """Bad hash, bad or untrusted signature, rollback, expiry. Never retry these."""

    exit_code = 3
    kind = "integrity"


class TamperError(IntegrityError):
    """The bytes differ from what the signature covers: a changed, missing, extra or reordered
    member, a header that is not the one the manifest determines, a damaged part."""


class SignatureError(IntegrityError):
    """A signature that does not verify, is not spelled as the packer writes it, or uses an
    algorithm the verifier does not accept."""


class UntrustedKeyError(SignatureError):
    """The signature may be sound, but no key in the far side's trust store made it."""


class ExpiredError(IntegrityError):
    """The bundle's signed expiry has passed (``--allow-expired`` overrides, loudly)."""


class RollbackError(IntegrityError):
    """The bundle would replace a newer installed version, or the same version with other
    content (``--allow-downgrade`` overrides, loudly)."""


class InvalidInputError(AirgapError):
    """A file the user gave us is malformed: airgap.yaml, a profile, something that is not a bundle."""

    exit_code = 4
    kind = "invalid input"


class UnsupportedFormatError(InvalidInputError):
    """A signed manifest names a bundle format this build has no reader for."""


class EnvironmentFailure(AirgapError):
    """The world did not cooperate: no engine, registry down, disk full, unwritable path."""

    exit_code = 5
    kind = "environment"


class Inconclusive(AirgapError):
    """The tool could not measure what it was asked to, so the answer is neither yes nor no: an
    acceptance load whose generator fell behind measured the generator, not the server. Never a
    miss; run it again where the generator keeps up."""

    exit_code = 6
    kind = "inconclusive"


class Interrupted(BaseException):
    """A signal (SIGINT, SIGTERM, SIGHUP) stopped the command.

    A ``BaseException`` like ``KeyboardInterrupt``: no ``except Exception`` may swallow it, while
    every ``except BaseException`` / ``finally`` that removes partial work still runs. The exit
    code is the shell's convention, 128 + the signal number (130 for Ctrl-C).
    """

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signum)
        self.signum = signum
        try:
            self.signal_name = signal.Signals(signum).name
        except ValueError:
            self.signal_name = f"signal {signum}"

    @property
    def exit_code(self) -> int:
        """128 + the signal number, so a calling shell or CI sees which signal stopped the run."""
        return 128 + self.signum


EXIT_CODES = {
    0: "success",
    1: "the tool worked and the answer is no",
    2: "usage error",
    3: "integrity or trust failure (never retry)",
    4: "invalid input",
    5: "environment failure",
    6: "inconclusive: the measurement could not be trusted (the load generator fell behind), nothing judged",
    70: "internal error (a bug in airgap: please report it with --verbose output)",
    129: "interrupted by SIGHUP (terminal closed)",
    130: "interrupted by SIGINT (Ctrl-C)",
    143: "interrupted by SIGTERM; after any interrupt, partial work is removed or reclaimed by the next run",
}
