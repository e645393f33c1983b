"""What the service will send: the size limits an answer must keep (checked before any work)
and the finiteness of what was computed (checked before it is sent)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.errors import NonFiniteResult, TooLarge
from app.service.arrays import all_finite


@dataclass(frozen=True)
class Encoding:
    """How an answer will be sent, decided once at the edge (`Encoding.chosen`): npz or JSON, the
    most elements it may hold, and, in the client's words, how to get a bigger or cheaper one."""

    npz: bool  # binary: npz, or the Open Inference Protocol's binary tensor data
    max_elements: int
    switch: str = ""  # advice to ask for the binary form instead, empty when the answer is binary already
    name: str = "npz"  # of the form, in messages

    @classmethod
    def chosen(
        cls, npz: bool, max_elements: int, max_json_elements: int, how_to_ask: str, binary: str = "npz"
    ) -> Encoding:
        if npz:
            return cls(True, max_elements, name=binary)
        switch = f", or ask for {binary} ({how_to_ask}), whose limit is {max_elements:,} elements"
        return cls(False, min(max_json_elements, max_elements), switch, "JSON")


def check_output_size(what: str, elements: int, formula: str, encoding: Encoding, hint: str) -> None:
    """Refuse before computing when the answer would exceed the encoding's element limit."""
    if elements <= encoding.max_elements:
        return
    raise TooLarge(
        f"The {what} would have {elements:,} elements ({formula}), more than this service's limit of "
        f"{encoding.max_elements:,} for {encoding.name} responses. Send a smaller request{hint}{encoding.switch}."
    )


def ensure_finite(arrays: dict[str, np.ndarray]) -> None:
    """Finite inputs can still overflow (e.g. entries near 1e308): refuse rather than send NaN."""
    bad = [name for name, a in arrays.items() if not all_finite(a)]
    if bad:
        raise NonFiniteResult(
            f"The result ({', '.join(bad)}) is not finite: X·Y overflows for these inputs. "
            "Scale X and Y down, or use dtype float64."
        )
