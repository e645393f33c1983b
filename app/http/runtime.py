"""What the app holds while it runs, as one typed object (`app.state.runtime`): its settings and
metrics, and once started, the service and the engines behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request

from app.catalog import Card
from app.config import Settings
from app.errors import NotReady, UnknownModel
from app.http.observability import Metrics
from app.service.dataplane import Service

if TYPE_CHECKING:
    from app.engine.derivatives import Engine


class Engines(Protocol):
    """TensorFlow behind the service: in this process (`app.http.app.InProcessEngine`) or engine
    processes (`app.ipc.client.Engines`)."""

    def readiness(self) -> dict[str, Any]: ...

    async def first_contact(self) -> None: ...

    async def push(self, model: str, values: dict[str, Any]) -> tuple[int, Card]: ...

    async def values(self, model: str, version: int = 0) -> tuple[int, dict[str, Any]]: ...

    def cards(self) -> list[dict[str, Any]] | None: ...
    def models(self) -> dict[str, Card] | None: ...

    async def stop(self) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    status: str = "starting"  # "starting" | "running" | "ready" | "failed"
    service: Service | None = None
    engines: Engines | None = None
    engine: Engine | None = None  # when TensorFlow runs in this process
    shm: dict[str, Any] | None = None  # the shared-memory report, when engines are processes


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def models(request: Request) -> dict[str, Card]:
    """The served models' cards by name, as the engines last reported them. A worker that has not
    heard from a live engine yet waits briefly for it, as its requests do (`first_contact`),
    rather than answer 503 while another worker, in contact already, says ready."""
    engines = runtime(request).engines
    found = None if engines is None else engines.models()
    if found is None and engines is not None:
        await engines.first_contact()
        found = engines.models()
    if found is None:
        raise NotReady("The service is still loading its models; retry shortly")
    return found


async def card(request: Request, name: str) -> Card:
    """A served model's card, as the engines last reported it."""
    found = (await models(request)).get(name)
    if found is None:
        raise UnknownModel(f"Unknown model {name!r}; GET /models lists the models served")
    return found


def engines(request: Request) -> Engines:
    found = runtime(request).engines
    if found is None:
        raise NotReady("The service is still loading TensorFlow and warming up; retry shortly")
    return found


def service(request: Request) -> Service:
    svc = runtime(request).service
    if svc is None:
        raise NotReady("The service is still loading TensorFlow and warming up; retry shortly")
    return svc
