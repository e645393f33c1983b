"""Domain exceptions. Each class names the HTTP status it becomes (`status`, inherited: a new
subclass is never a 500 by accident); `app.http.handlers` writes the response, in one place. No web
imports here, so any layer may raise them."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base class: a request the service refuses, with a message that says how to fix it."""

    status = 400
    code = "error"
    retry_after_s: int | None = None  # sent as Retry-After when set

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class MalformedBody(ServiceError):
    """400: the body is not valid JSON / npz at all (empty, truncated, too deeply nested)."""

    status = 400
    code = "malformed_body"


class InvalidInput(ServiceError):
    """422: the body parses but does not describe a valid problem (shapes, types, values)."""

    status = 422
    code = "invalid_input"


class NonFiniteResult(ServiceError):
    """422: finite inputs whose derivatives overflow to inf/NaN."""

    status = 422
    code = "non_finite_result"


class TooLarge(ServiceError):
    """413: the request body or the output it would produce exceeds a configured limit."""

    status = 413
    code = "too_large"


class OverMemoryBudget(TooLarge):
    """413: the request alone would need more memory than the whole budget (JACOBIAN_MEMORY_BUDGET_BYTES)."""

    code = "over_memory_budget"


class UnsupportedMediaType(ServiceError):
    """415: a Content-Type the service does not read."""

    status = 415
    code = "unsupported_media_type"


class Unauthorized(ServiceError):
    """401: an API key is configured and the request did not present it."""

    status = 401
    code = "unauthorized"


class NotReady(ServiceError):
    """503: TensorFlow is still loading or warming up."""

    status = 503
    code = "not_ready"


class Overloaded(ServiceError):
    """503 with Retry-After: too many computations are running or waiting."""

    status = 503
    code = "overloaded"
    retry_after_s = 1


class MemoryBusy(Overloaded):
    """503 with Retry-After: requests in flight hold the memory budget, and this one waited too long
    for room (or the queue is full)."""

    code = "memory_busy"
    retry_after_s = 2

    @classmethod
    def waited(cls, budget: int, claimed: int, wait_s: float) -> MemoryBusy:
        return cls(
            f"Requests in flight hold {claimed:,} bytes of the memory budget of {budget:,} bytes "
            f"(JACOBIAN_MEMORY_BUDGET_BYTES) and this one found no room within {wait_s:g} s; retry shortly"
        )


class UnknownModel(ServiceError):
    """404: a model (or a V2 model's version) this service does not have."""

    status = 404
    code = "unknown_model"


class EngineUnavailable(ServiceError):
    """503 with Retry-After: the engine process died or is restarting; the supervisor brings it back."""

    status = 503
    code = "engine_unavailable"
    retry_after_s = 2


class ClientDisconnected(ServiceError):
    """499 (nginx's convention): the client went away; nobody reads this answer."""

    status = 499
    code = "client_disconnected"


class DeadlineExceeded(ServiceError):
    """504: the computation did not finish within the configured deadline."""

    status = 504
    code = "deadline_exceeded"


class ModelUnavailable(ServiceError):
    """503: a repository model that failed to load; the message says why."""

    status = 503
    code = "model_unavailable"


class UndefinedGradient(InvalidInput):
    """422: a derivative through an op TensorFlow defines no gradient for (found at load)."""

    code = "undefined_gradient"


class ModelRefused(InvalidInput):
    """422: the model's own graph refused these inputs (an index out of range, a failed assertion)."""

    code = "model_refused_input"
