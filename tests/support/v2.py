"""Open Inference Protocol request bodies, written by hand (JSON tensors or binary data)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

X = np.arange(8.0).reshape(2, 4) / 10
Y = np.array([1.0, 2.0, 3.0, 4.0])


def tensor(name: str, a: np.ndarray, datatype: str = "FP64", binary: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"name": name, "shape": list(a.shape), "datatype": datatype}
    if binary:
        t["parameters"] = {"binary_data_size": a.nbytes}
    else:
        t["data"] = a.tolist()
    return t


def v2_body(request: dict[str, Any], *binary: np.ndarray) -> tuple[bytes, str | None]:
    """The body and its Inference-Header-Content-Length (None without binary data)."""
    head = orjson.dumps(request)
    if not binary:
        return head, None
    return head + b"".join(a.astype(a.dtype.newbyteorder("<")).tobytes() for a in binary), str(len(head))
