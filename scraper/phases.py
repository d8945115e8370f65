"""What every worker shares: a failure tied to the phase it happened in, and its one-line description."""

from __future__ import annotations

from typing import Optional


class PhaseError(Exception):
    """A failure in a named phase of the worker; `details` are result fields saying more (what was tried)."""

    def __init__(self, phase: str, error: BaseException | str, details: Optional[dict] = None) -> None:
        super().__init__(str(error))
        self.phase = phase
        self.error = error
        self.details = details or {}


def phase(name: str, step):
    """Run `step()`; any exception becomes a PhaseError of `name`."""
    try:
        return step()
    except Exception as exc:
        raise PhaseError(name, exc) from exc


def describe(error: BaseException | str) -> str:
    """`Type: first line of the message` (the full traceback goes to the log)."""
    if not isinstance(error, BaseException):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:500] if text else ''}".rstrip(": ")
