"""A model's versions: the values of its trainable variables, as loaded (the repository's version)
and as pushed since (`PUT /models/{name}/variables`), each a new number. Every call passes the
values of its version to the traced function (`app.engine.graphs`), so a push retraces nothing.

The newest `keep` versions are kept. An older one stays while a request that started on it is
in flight (it holds its `Version`), then goes with the last such request (a weak reference).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from app.errors import UnknownModel

NEWEST = 0  # a call's version when it names none


@dataclass(eq=False)  # weakly referenced: by identity
class Version:
    number: int
    values: dict[str, tf.Tensor]


class Versions:
    def __init__(self, model: str, number: int, values: dict[str, tf.Tensor], keep: int) -> None:
        self.model, self.keep = model, max(1, keep)
        self.kept: dict[int, Version] = {number: Version(number, values)}
        self._retired: weakref.WeakValueDictionary[int, Version] = weakref.WeakValueDictionary()

    @property
    def newest(self) -> Version:
        return self.kept[max(self.kept)]

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(sorted(self.kept))

    def get(self, number: int) -> Version:
        """The version `number` (the newest for NEWEST); UnknownModel (404) if it is not kept."""
        if number == NEWEST:
            return self.newest
        found = self.kept.get(number) or self._retired.get(number)
        if found is None:
            kept = ", ".join(map(str, self.numbers))
            raise UnknownModel(f"Model {self.model!r} has no version {number}; its versions are {kept}")
        return found

    def push(self, given: Mapping[str, np.ndarray], number: int = NEWEST) -> Version:
        """A new version: the newest's values with `given` in their place, numbered next (or
        `number`, the same one another engine gave it). The oldest beyond `keep` retire."""
        newest = self.newest
        number = number or newest.number + 1
        if number in self.kept:  # already made here (a push repeated to every engine)
            return self.kept[number]
        values = dict(newest.values) | {n: tf.constant(a, dtype=newest.values[n].dtype) for n, a in given.items()}
        kept = {**self.kept, number: (version := Version(number, values))}
        while len(kept) > self.keep:
            oldest = min(kept)
            self._retired[oldest] = kept.pop(oldest)
        self.kept = kept  # one assignment: a call reading it on the engine's thread sees one or the other
        return version
