"""app/http/runtime.py: a worker that has not heard from a live engine yet waits briefly for it
before it looks a model up, as its requests do, rather than answer 503 while another worker,
in contact already, says ready (seen as a flaky 503 on a fresh two-worker service)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from app.catalog import BUILTIN_CARD
from app.config import Settings
from app.errors import NotReady, UnknownModel
from app.http import runtime
from app.http.observability import Metrics


class Engines:
    """Models known only once first contact has happened (or never, with `reachable` false)."""

    def __init__(self, reachable: bool = True) -> None:
        self.reachable, self.contacted, self.waits = reachable, False, 0

    def models(self) -> dict[str, Any] | None:
        return {BUILTIN_CARD.name: BUILTIN_CARD} if self.contacted else None

    async def first_contact(self) -> None:
        self.waits += 1
        await asyncio.sleep(0.01)
        self.contacted = self.reachable


def _request(engines: Engines) -> Any:
    state = runtime.Runtime(Settings(), Metrics(), engines=engines)  # type: ignore[arg-type]
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(runtime=state)))


def test_a_card_waits_for_the_first_contact_with_the_engine() -> None:
    engines = Engines()
    assert asyncio.run(runtime.card(_request(engines), BUILTIN_CARD.name)) == BUILTIN_CARD
    assert engines.waits == 1
    asyncio.run(runtime.card(_request(engines), BUILTIN_CARD.name))
    assert engines.waits == 1  # in contact: no wait


def test_no_engine_heard_from_is_not_ready_and_an_unknown_name_is_unknown() -> None:
    with pytest.raises(NotReady, match="still loading its models"):
        asyncio.run(runtime.card(_request(Engines(reachable=False)), BUILTIN_CARD.name))
    with pytest.raises(UnknownModel, match="Unknown model 'nope'"):
        asyncio.run(runtime.card(_request(Engines()), "nope"))
