"""How a processor tells whoever started it why it stopped: its exit code, and one status line.

The exit code is the contract a platform can always read (the kernel, bubblewrap, podman and
Kubernetes all keep it). What the code cannot carry (which handler, which line) goes in one
status line on the processor's stdout, written once, just before it exits:
``tickrun-status: {"code": 78, "reason": "handler-load-error", "detail": "..."}``. A platform
captures that line from the replica's output stream (the process platform's log writer keeps it
in a status file), so the controller never reads log messages to learn why a replica stopped.

The status line shares the stream with the handler's own output, so it is display data only:
a reader keeps it when its code matches the exit code the platform saw, and decisions (back off,
mark the function failed) are taken on the exit code alone.
"""

from __future__ import annotations

import enum
import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import HandlerLoadError, InitContextError, SpecError, TickrunError, TriggerError

STATUS_PREFIX = "tickrun-status: "
MAX_DETAIL_CHARS = 300  # one line: the message, never a traceback
MAX_STATUS_LINE_BYTES = 4096


class ExitCode(enum.IntEnum):
    """Every exit code the processor (supervisor and workers) uses, from sysexits.h."""

    OK = 0
    FAILURE = 1  # an unexpected error: Python's own code for an uncaught exception
    RESTART = 75  # EX_TEMPFAIL: a worker asks to be replaced (e.g. every slot stuck)
    CONFIG = 78  # EX_CONFIG: the function cannot start; restarting soon will not help

    @classmethod
    def describe(cls, code: int | None) -> str:
        """A short name for any exit code a platform reports (signals included)."""
        if code is None:
            return "unknown"
        if code < 0:
            return f"signal {-code}"
        if code > 128 and code - 128 < 65:  # a shell's, a container init's or bwrap's signal
            return f"signal {code - 128}"
        try:
            return cls(code).name.lower()
        except ValueError:
            return f"exit {code}"


class Reason(enum.StrEnum):
    """Why a processor is not ready, or why it stopped."""

    HANDLER_LOAD = "handler-load-error"  # the handler module cannot be imported or found
    INIT_CONTEXT = "init-context-error"  # the handler's init_context raised
    SPEC = "spec-error"  # the function spec is invalid for this runtime
    TRIGGER = "trigger-error"  # a trigger could not start
    START = "start-error"  # any other start failure
    STARTING = "starting"  # /readyz: still loading, or not every worker is bound
    TRIGGERS_NOT_READY = "triggers-not-ready"  # /readyz: a trigger has not reached its source
    DRAINING = "draining"  # /readyz: stopping; finishing in-flight events

    @classmethod
    def of(cls, exc: TickrunError) -> Reason:
        """The reason a start failure stands for (the most specific error class wins)."""
        for kind, reason in (
            (InitContextError, cls.INIT_CONTEXT),
            (HandlerLoadError, cls.HANDLER_LOAD),
            (TriggerError, cls.TRIGGER),
            (SpecError, cls.SPEC),
        ):
            if isinstance(exc, kind):
                return reason
        return cls.START


def not_ready_reason(body: bytes) -> str:
    """``reason: detail`` from a 503 ``/readyz`` body, or "" when the body says nothing usable
    (it comes from the replica: only a known reason is taken, and the detail is bounded)."""
    try:
        data = json.loads(body[:MAX_STATUS_LINE_BYTES])
        reason = Reason(data["reason"])
    except (ValueError, KeyError, TypeError):
        return ""
    detail = data.get("detail")
    return f"{reason.value}: {one_line(detail)}" if isinstance(detail, str) else reason.value


def one_line(text: str) -> str:
    """``text`` as one bounded line (a message may carry the user's own newlines)."""
    return " ".join(text.split())[:MAX_DETAIL_CHARS]


class ExitStatus(BaseModel):
    """What a stopped processor reported about itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: int
    reason: Reason
    detail: str = Field(default="", max_length=MAX_DETAIL_CHARS)

    @classmethod
    def of(cls, exc: TickrunError, code: ExitCode = ExitCode.CONFIG) -> ExitStatus:
        return cls(code=int(code), reason=Reason.of(exc), detail=one_line(exc.message))

    def line(self) -> str:
        """The status line, newline included."""
        return STATUS_PREFIX + self.model_dump_json() + "\n"

    def summary(self) -> str:
        """One line for a function's message and its events."""
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value

    @classmethod
    def parse(cls, text: str | bytes) -> ExitStatus | None:
        """A status record (the line, with or without its prefix), or None if it is not one:
        the line came through a stream the handler also writes, so anything may be there."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        text = text.strip().removeprefix(STATUS_PREFIX.strip()).strip()
        if len(text) > MAX_STATUS_LINE_BYTES:
            return None
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            return None

    @classmethod
    def last_in(cls, lines: list[str]) -> ExitStatus | None:
        """The last status line among a replica's output lines (a container engine's log)."""
        for line in reversed(lines):
            if line.startswith(STATUS_PREFIX):
                status = cls.parse(line)
                if status is not None:
                    return status
        return None
