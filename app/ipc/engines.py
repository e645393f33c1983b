"""The engine processes an HTTP worker talks to (`EngineClient` each): a request goes to the ready
one with least work; a push reaches every one before it is answered; the models' cards come from
their statuses. No TensorFlow here."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from app.calls import Call, Computed
from app.catalog import Card, card_from_dict
from app.config import Settings
from app.ipc.client import EngineClient


class Engines:
    """The engine processes a worker talks to; each request goes to the ready one with least work."""

    def __init__(self, settings: Settings, observe_ipc: Any = None) -> None:
        self.clients = [EngineClient(i, settings, observe_ipc) for i in range(settings.engines)]
        self._listed: list[dict[str, Any]] | None = None
        self._models: dict[str, Card] = {}

    def start(self) -> None:
        for c in self.clients:
            c.start()

    async def stop(self) -> None:
        for c in self.clients:
            await c.stop()

    async def submit(
        self, call: Call, *rows: np.ndarray, claim: int = 0, model: str = "", claim_after: int = 0
    ) -> Computed:
        least = min([c for c in self.clients if c.state == "ready"] or self.clients, key=lambda c: c.in_flight)
        return await least.submit(call, *rows, claim=claim, model=model, claim_after=claim_after)

    async def first_contact(self) -> None:
        await asyncio.gather(*(c.first_contact() for c in self.clients))

    async def values(self, model: str, version: int = 0) -> tuple[int, dict[str, np.ndarray]]:
        return await min(self.clients, key=lambda c: c.in_flight).values(model, version)

    async def push(self, model: str, values: dict[str, np.ndarray]) -> tuple[int, Card]:
        """A new version in every engine before it is answered: the first numbers it, the others
        make the same number."""
        first, *rest = self.clients
        version, card = await first.push(model, values)
        await asyncio.gather(*(c.push(model, values, version) for c in rest))
        return version, card_from_dict(card)

    def cards(self) -> list[dict[str, Any]] | None:
        """The models, as the engines loaded them (each loads the same repository); None until
        one has said."""
        statuses = [c.status for c in self.clients if c.status]
        return list(statuses[0].get("models", [])) if statuses else None

    def models(self) -> dict[str, Card] | None:
        """The served models' cards by name (the first of a name: the built-in's), read once per
        status an engine reports; None until one has said."""
        statuses = [c.status for c in self.clients if c.status]
        if not statuses:
            return None
        listed = statuses[0].get("models", [])
        if listed is not self._listed:
            self._listed, self._models = listed, {}
            for card in listed:
                self._models.setdefault(card["name"], card_from_dict(card))
        return self._models

    def readiness(self) -> dict[str, Any]:
        engines = [{"index": c.index, "pid": c.pid, "state": c.state} for c in self.clients]
        down = [e for e in engines if e["state"] != "ready"]
        statuses = [c.status for c in self.clients if c.status]
        return {
            "status": "ready" if not down else "starting",
            "reason": "; ".join(f"engine {e['index']} is {e['state']}" for e in down) or None,
            "engine_pids": [e["pid"] for e in engines if e["pid"] is not None],
            "engines": engines,
            "tensorflow": statuses[0]["tensorflow"] if statuses else None,
            "devices": sorted({d for s in statuses for d in s["devices"]}),
            "onednn": any(s["onednn"] for s in statuses) if statuses else None,
            "trace_count": sum(s["trace_count"] for s in statuses) if statuses else None,
            "xla_shapes": sum(s["xla_shapes"] for s in statuses) if statuses else None,
            "xla_compiling": sum(s["xla_compiling"] for s in statuses) if statuses else None,
            "memory_claimed_bytes": sum(s["memory_claimed_bytes"] for s in statuses) if statuses else None,
        }
