"""How long a repository model's calls take, learned from the calls themselves (never from one that
traced): what refuses a request that cannot finish before its deadline, before it starts, and
sizes the pieces a long call runs in, so that it stops soon after its deadline passes.

TensorFlow cannot stop a running graph between ops (its cancellation reaches only loops and calls
not yet started), so a call of many independent rows is split into pieces of about PIECE_S, and
the deadline is checked between them. Rows of a shape not timed yet are costed from the same
call's other shapes, per byte of a row's inputs and answer; a call never timed at all runs one row
at a time until one has been.
"""

from __future__ import annotations

import math
from typing import Any

PIECE_S = 0.25  # a long call's pieces take about this long: how late past its deadline it stops
KEEP = 8  # row counts remembered per call


class Costs:
    def __init__(self) -> None:
        self._seen: dict[Any, dict[int, float]] = {}  # call and shapes -> rows -> seconds, the latest last
        self._per_byte: dict[Any, float] = {}  # call, whatever the shapes -> seconds per byte of a row

    def observe(self, key: Any, rows: int, seconds: float, family: Any = None, row_bytes: int = 0) -> None:
        seen = self._seen.setdefault(key, {})
        seen.pop(rows, None)
        seen[rows] = seconds
        if len(seen) > KEEP:
            del seen[next(iter(seen))]
        if family is not None and row_bytes > 0:
            self._per_byte[family] = max(self._per_byte.get(family, 0.0), seconds / (rows * row_bytes))

    def piece(self, key: Any, rows: int, family: Any = None, row_bytes: int = 0) -> int:
        """Rows per piece: about PIECE_S at the per-row cost of the largest call timed of this
        shape, else of the call's other shapes per byte (the slowest seen); one row while none has been."""
        seen = self._seen.get(key)
        if seen:
            n = max(seen)
            per_row = seen[n] / n
        elif family in self._per_byte and row_bytes > 0:
            per_row = self._per_byte[family] * row_bytes
        else:
            return 1
        return max(1, min(rows, int(PIECE_S / per_row) if per_row > 0 else rows))

    def at_least(self, key: Any, rows: int, piece: int) -> float | None:
        """A lower bound on the seconds `rows` rows take in pieces of `piece` rows: each piece at
        least as long as the largest timed call of no more rows. None when none is that small."""
        seen = self._seen.get(key) or {}
        smaller = [n for n in seen if n <= piece]
        if not smaller:
            return None
        return seen[max(smaller)] * math.ceil(rows / piece)
