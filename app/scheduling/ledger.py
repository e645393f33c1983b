"""The ledger of memory claims: bytes that requests in flight have claimed against the budget
(their estimates come from app.service.budget). One per engine holds every worker's claims."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Ledger:
    """Bytes claimed by requests in flight against the budget."""

    budget: int
    claimed: int = 0

    def fits(self, nbytes: int) -> bool:
        # With nothing claimed, anything runs: a request the worker let through (it checks each
        # against the whole budget) must never wait for memory that can never free up.
        return self.claimed == 0 or self.claimed + nbytes <= self.budget

    def claim(self, nbytes: int) -> None:
        self.claimed += nbytes

    def release(self, nbytes: int) -> None:
        self.claimed = max(self.claimed - nbytes, 0)
