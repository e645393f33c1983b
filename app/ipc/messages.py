"""The messages between an HTTP worker and an engine process, one type each, named by `kind` on
the wire (a JSON header, `app.ipc.wire`). The engine's refusals are types too, each mapping to
the domain exception the worker raises (`Refusal.exception`), with what its message needs.

worker → engine: `Compute`, `Release`, `StatusQuery`, `Push` (a model's variables' new values),
`ValuesQuery`; engine → worker: `Answer` (arrays in the payload), `SharedAnswer` (in the worker's
segment), `Status`, `Pushed`, `Values`, and the refusals `MemoryRefused`, `OverloadedRefused`, `EngineFailed`,
`InputRefused`, `DeadlineRefused`, `NotFoundRefused`, `PushRefused`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from app.calls import Call
from app.errors import DeadlineExceeded, InvalidInput, MemoryBusy, ModelRefused, Overloaded, UnknownModel

ArraySpec = tuple[str, list[int]]  # dtype, shape
Entry = tuple[str, str, list[int], int]  # name, dtype, shape, offset in a segment (`app.ipc.shm.Layout`)


def _tuples(rows: list[Any]) -> list[Any]:
    """JSON gives lists back where tuples were sent."""
    return [tuple(r) for r in rows]


@dataclass(frozen=True)
class Placed:
    """Arrays placed in a shared-memory segment: its name and size, and where each sits."""

    segment: str
    size: int
    entries: list[Entry]
    nbytes: int


@dataclass(frozen=True)
class Compute:
    """Compute `call` of `model` over these rows, claiming `claim` bytes of the memory budget."""

    id: int
    call: Call
    model: str
    arrays: list[ArraySpec]  # the rows in the payload, or in `inputs`
    inputs: Placed | None  # big inputs, in the worker's segment instead of the payload
    shm: str | None  # the worker's segment for a big answer
    shm_size: int
    worker: int  # the worker's process id
    claim: int
    claim_after: int = 0  # what it holds once computed, when less (`app.scheduling.policy.Job`)
    kind: Literal["compute"] = "compute"

    @classmethod
    def parse(cls, header: dict[str, Any]) -> Compute:
        placed = header.pop("inputs")
        if placed is not None:
            placed = Placed(**(placed | {"entries": _tuples(placed["entries"])}))
        call = header.pop("call")
        call = Call(**(call | {k: tuple(call[k]) for k in ("wrt", "of", "variables")}))
        return cls(**(header | {"arrays": _tuples(header["arrays"])}), call=call, inputs=placed)


@dataclass(frozen=True)
class Release:
    """The answer to request `id` has been sent or given up on: its claim and segment are free."""

    id: int
    kind: Literal["release"] = "release"


@dataclass(frozen=True)
class Push:
    """New values for some of `model`'s variables (the payload's arrays, by `names`): a new
    version, numbered `version` when another engine numbered it already (0: the next)."""

    id: int
    model: str
    names: list[str]
    arrays: list[ArraySpec]
    version: int = 0
    kind: Literal["push"] = "push"

    @classmethod
    def parse(cls, header: dict[str, Any]) -> Push:
        return cls(**(header | {"arrays": _tuples(header["arrays"])}))


@dataclass(frozen=True)
class Pushed:
    id: int
    version: int
    card: dict[str, Any]  # the model's card, saying its versions
    kind: Literal["pushed"] = "pushed"


@dataclass(frozen=True)
class ValuesQuery:
    """The values of `model`'s variables at `version` (0: the newest)."""

    id: int
    model: str
    version: int = 0
    kind: Literal["values_query"] = "values_query"


@dataclass(frozen=True)
class Values:
    id: int
    version: int
    names: list[str]
    arrays: list[ArraySpec]  # in the payload, in `names`' order
    kind: Literal["values"] = "values"

    @classmethod
    def parse(cls, header: dict[str, Any]) -> Values:
        return cls(**(header | {"arrays": _tuples(header["arrays"])}))


@dataclass(frozen=True)
class StatusQuery:
    id: int = -1
    kind: Literal["status_query"] = "status_query"


@dataclass(frozen=True)
class Status:
    id: int
    status: dict[str, Any]  # the engine's description (`app.engine.derivatives.Engine.describe`) and claims
    kind: Literal["status"] = "status"


@dataclass(frozen=True)
class Answer:
    id: int
    device: str
    compute_s: float
    names: list[str]
    arrays: list[ArraySpec]  # in the payload, in `names`' order
    version: int = 0  # of the model's variables it ran on
    kind: Literal["answer"] = "answer"

    @classmethod
    def parse(cls, header: dict[str, Any]) -> Answer:
        return cls(**(header | {"arrays": _tuples(header["arrays"])}))


@dataclass(frozen=True)
class SharedAnswer:
    """The answer is in the worker's segment; its claim is held until the worker's `Release`."""

    id: int
    device: str
    compute_s: float
    entries: list[Entry]
    nbytes: int
    version: int = 0
    kind: Literal["shared_answer"] = "shared_answer"

    @classmethod
    def parse(cls, header: dict[str, Any]) -> SharedAnswer:
        return cls(**(header | {"entries": _tuples(header["entries"])}))


class Refusal:
    """An engine's refusal of one request, raised in the worker as a domain exception."""

    id: int

    def exception(self) -> Exception:
        raise NotImplementedError


@dataclass(frozen=True)
class MemoryRefused(Refusal):
    """It waited `wait_s` for memory the budget never had free."""

    id: int
    budget: int
    claimed: int
    wait_s: float
    kind: Literal["memory"] = "memory"

    def exception(self) -> Exception:
        return MemoryBusy.waited(self.budget, self.claimed, self.wait_s)


@dataclass(frozen=True)
class OverloadedRefused(Refusal):
    id: int
    capacity: int  # requests waiting at most
    kind: Literal["overloaded"] = "overloaded"

    def exception(self) -> Exception:
        return Overloaded(f"The service is at capacity ({self.capacity} requests waiting); retry shortly")


@dataclass(frozen=True)
class EngineFailed(Refusal):
    id: int
    message: str
    kind: Literal["failed"] = "failed"

    def exception(self) -> Exception:
        # Not a domain error: a 500 whose details stay in the logs, never in a response.
        return RuntimeError(f"engine error: {self.message}")


@dataclass(frozen=True)
class InputRefused(Refusal):
    """A repository model's graph refused the request's inputs (`ModelRefused`, a 422)."""

    id: int
    message: str
    kind: Literal["input_refused"] = "input_refused"

    def exception(self) -> Exception:
        return ModelRefused(self.message)


@dataclass(frozen=True)
class DeadlineRefused(Refusal):
    """The request could not finish before its deadline: refused before it started, or stopped
    (`DeadlineExceeded`, a 504)."""

    id: int
    message: str
    kind: Literal["deadline"] = "deadline"

    def exception(self) -> Exception:
        return DeadlineExceeded(self.message)


@dataclass(frozen=True)
class NotFoundRefused(Refusal):
    """The model, or the version of it asked for, is not there (`UnknownModel`, a 404)."""

    id: int
    message: str
    kind: Literal["not_found"] = "not_found"

    def exception(self) -> Exception:
        return UnknownModel(self.message)


@dataclass(frozen=True)
class PushRefused(Refusal):
    """The model takes no new values for its variables (`InvalidInput`, a 422)."""

    id: int
    message: str
    kind: Literal["push_refused"] = "push_refused"

    def exception(self) -> Exception:
        return InvalidInput(self.message)


Refused = MemoryRefused | OverloadedRefused | EngineFailed | InputRefused | DeadlineRefused | NotFoundRefused
Message = (
    Compute
    | Push
    | Pushed
    | ValuesQuery
    | Values
    | Release
    | StatusQuery
    | Status
    | Answer
    | SharedAnswer
    | MemoryRefused
    | OverloadedRefused
    | EngineFailed
    | InputRefused
    | DeadlineRefused
    | NotFoundRefused
    | PushRefused
)
_TYPES: tuple[type[Message], ...] = get_args(Message)
_KINDS: dict[str, Any] = {cls.kind: cls for cls in _TYPES}


def parse(header: dict[str, Any]) -> Message:
    """The message a decoded header holds; ValueError if it is not one."""
    cls = _KINDS.get(header.get("kind", ""))
    if cls is None:
        raise ValueError(f"unknown message kind {header.get('kind')!r}")
    parsed: Message = cls.parse(header) if hasattr(cls, "parse") else cls(**header)
    return parsed
