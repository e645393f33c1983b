"""What the service will send: the size limits an answer must keep (checked before any work)
and the finiteness of what was computed (checked before it is sent)."""

from __future__ import annotations

import numpy as np

from app.errors import NonFiniteResult, TooLarge


def check_output_size(
    what: str, elements: int, formula: str, limit: int, json_limit: int, as_npz: bool, hint: str
) -> None:
    """Refuse before computing when the answer would exceed the configured element limit."""
    allowed = limit if as_npz else min(json_limit, limit)
    if elements <= allowed:
        return
    transport = "npz" if as_npz else "JSON"
    fix = hint
    if not as_npz and json_limit < limit:
        fix += f", or ask for npz (Accept: application/x-npz), whose limit is {limit:,}"
    raise TooLarge(
        f"The {what} would have {elements:,} elements ({formula}), more than this service's "
        f"limit of {allowed:,} for {transport} responses. Send a smaller request{fix}."
    )


def ensure_finite(arrays: dict[str, np.ndarray]) -> None:
    """Finite inputs can still overflow (e.g. entries near 1e308): refuse rather than send NaN."""
    bad = [name for name, a in arrays.items() if not np.isfinite(a).all()]
    if bad:
        raise NonFiniteResult(
            f"The result ({', '.join(bad)}) is not finite: X·Y overflows for these inputs. "
            "Scale X and Y down, or use dtype float64."
        )
