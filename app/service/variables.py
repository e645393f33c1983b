"""A model's trainable variables given values by a request (`variables`: the derivatives are at
those values, the stored ones are not changed) or by a push (`PUT /models/{name}/variables`: a
new version), checked against its card before any work: by name, shape, dtype and finiteness. No
web imports, no TensorFlow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from app.catalog import Card, variables_fixed
from app.service.arrays import _fail, array_for, check_shape, tensor_text


def read_variables(card: Card, given: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Values for some or all of the card's trainable variables, in its order, each its dtype
    and shape exactly; 422 naming the variable otherwise."""
    fixed = variables_fixed(card)
    if fixed:
        raise _fail(["variables"], fixed)
    tensors = {v.name: v for v in card.variables}
    unknown = [n for n in given if n not in tensors]
    if unknown:
        listed = ", ".join(tensor_text(v) for v in card.variables)
        msg = f"Model {card.name!r} has no variable {unknown[0]!r}; its trainable variables are {listed}"
        raise _fail(["variables", unknown[0]], msg)
    arrays = {}
    for v in card.variables:
        if v.name in given:
            loc = ["variables", v.name]
            a = array_for(v, given[v.name], loc)
            check_shape(v, a, loc)
            arrays[v.name] = a
    return arrays
