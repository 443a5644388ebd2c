"""tickrun's one error hierarchy.

Every error tickrun raises on purpose is a :class:`TickrunError`. Each carries a short, user-facing
message that is safe to show a caller (no traceback, no secrets); ``status`` is the HTTP status the
controller and the HTTP trigger map it to.
"""

from __future__ import annotations


class TickrunError(Exception):
    """Base of every error tickrun raises on purpose."""

    status: int = 500

    def __init__(self, message: str, *, detail: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"error": type(self).__name__, "detail": self.message}
        if self.detail is not None:
            out["fields"] = self.detail
        return out


class SpecError(TickrunError):
    """A function spec (function.yaml) or one of its fields is invalid."""

    status = 400


class HandlerLoadError(TickrunError):
    """The handler named by the spec cannot be imported or is not callable."""

    status = 500


class InitContextError(HandlerLoadError):
    """The handler's ``init_context`` raised."""


class EventTimeoutError(TickrunError):
    """A handler ran past the function's event timeout."""

    status = 504


class WorkerUnavailableError(TickrunError):
    """No worker freed up within the trigger's worker-availability timeout."""

    status = 503


class HandlerFailure(TickrunError):
    """The handler raised; the cause is chained, the message is safe to return to a caller."""

    status = 500

    def __init__(self, exc: BaseException, event_id: str | None) -> None:
        super().__init__(f"handler raised {type(exc).__name__}")
        self.exc_type = type(exc).__name__
        self.event_id = event_id


class HandlerStatusError(TickrunError):
    """A handler answered with a 5xx status: to a trigger that retries, a failure like a raise."""

    status = 502

    def __init__(self, handler_status: int) -> None:
        super().__init__(f"handler answered with status {handler_status}")
        self.handler_status = handler_status


class BodyTooLargeError(TickrunError):
    """A request body is over the trigger's limit."""

    status = 413


class BadRequestError(TickrunError):
    """A request to the runtime is malformed."""

    status = 400


class InvalidFieldError(BadRequestError, ValueError):
    """A record built with a field outside its limits (:mod:`tickrun.functions.datamodel`).
    Also a ValueError, as pydantic's ValidationError is, for code that treats bad values alike."""


class RequestTimeoutError(BadRequestError):
    """A client stopped sending its request before it was complete."""

    status = 408


class TriggerError(TickrunError):
    """A trigger failed to start, or lost its source."""


class TriggerConfigError(TriggerError, SpecError):
    """A trigger's attributes are invalid for its kind."""

    status = 400


class NotFoundError(TickrunError):
    """The named object (function, run, artifact, hub item) does not exist."""

    status = 404


class ConflictError(TickrunError):
    """The request conflicts with the current state."""

    status = 409


class AuthError(TickrunError):
    """Missing or wrong credentials."""

    status = 401


class ArtifactError(TickrunError):
    """An artifact could not be stored or read."""


class StoreError(TickrunError):
    """The state store could not be read or written."""


class RunError(TickrunError):
    """A tracked run could not be created or completed."""


class BuildError(TickrunError):
    """An image or environment build failed."""


class PlatformError(TickrunError):
    """A platform could not start, stop or inspect a replica."""


class HubError(TickrunError):
    """A hub item cannot be resolved or loaded."""

    status = 404
