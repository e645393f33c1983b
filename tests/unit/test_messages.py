"""app/ipc/messages.py and the framing of app/ipc/wire.py: every message survives the wire as its
own type with its fields, payload arrays are read back in place, and each refusal becomes the
domain exception (and so the HTTP status) a worker raises. No TensorFlow, no sockets."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from app.calls import Call
from app.errors import DeadlineExceeded, MemoryBusy, Overloaded
from app.ipc import messages as m
from app.ipc import wire

EXAMPLES: list[m.Message] = [
    m.Compute(
        3,
        Call("vjp", ("X",), ("W",), single=True, dtype="float64"),
        "policy",
        [("float64", [2, 3])],
        None,
        None,
        0,
        41,
        1024,
    ),
    m.Compute(
        4,
        Call("jacobian", ("x", "variables"), ("y",), row_bytes=24, fixed_bytes=8, arrays=3),
        "tanh",
        [("float32", [1, 2])],
        m.Placed("s-1-1", 1 << 20, [("0", "float32", [1, 2], 0)], 64),
        "s-1-2",
        1 << 21,
        41,
        0,
    ),
    m.Release(3),
    m.StatusQuery(),
    m.Status(-1, {"pid": 7, "devices": ["/device:CPU:0"]}),
    m.Answer(3, "/device:CPU:0", 0.25, ["W"], [("float64", [2])]),
    m.SharedAnswer(4, "/device:CPU:0", 0.5, [("W", "float32", [1, 2], 0)], 64),
    m.MemoryRefused(5, 1000, 900, 2.5),
    m.OverloadedRefused(6, 256),
    m.EngineFailed(7, "inputs gone"),
    m.InputRefused(8, "indices[0] = 7 is not in [0, 3)"),
    m.DeadlineRefused(9, "stopped after 2 of 200 rows"),
]


def _through_the_wire(message: m.Message, *arrays: np.ndarray) -> tuple[m.Message, bytes]:
    buffer = bytearray(b"".join(wire.frames(message, arrays)))
    (received,) = wire.Server._parse(None, buffer)  # type: ignore[arg-type]
    assert not buffer  # the whole message was taken
    return received.message, received.payload


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_message_comes_back_as_itself(message: m.Message) -> None:
    back, payload = _through_the_wire(message)
    assert type(back) is type(message) and back == message and payload == b""


def test_the_payload_arrays_are_read_back_in_place() -> None:
    W, J = np.arange(3.0), np.arange(12, dtype=np.float32).reshape(3, 4)
    answer = m.Answer(1, "/device:CPU:0", 0.1, ["W", "J"], wire.specs([W, J]))
    back, payload = _through_the_wire(answer, W, J)
    assert isinstance(back, m.Answer)
    got = dict(zip(back.names, wire.split(payload, back.arrays), strict=True))
    np.testing.assert_array_equal(got["W"], W)
    np.testing.assert_array_equal(got["J"], J)
    assert got["J"].dtype == np.float32 and np.shares_memory(got["J"], np.frombuffer(payload, np.uint8))


def test_refusals_become_the_domain_exceptions() -> None:
    memory = m.MemoryRefused(1, budget=1000, claimed=900, wait_s=2.5).exception()
    assert isinstance(memory, MemoryBusy) and memory.status == 503 and "900" in memory.message
    overloaded = m.OverloadedRefused(2, capacity=256).exception()
    assert type(overloaded) is Overloaded and "256 requests" in overloaded.message
    late = m.DeadlineRefused(4, "stopped after 2 of 200 rows").exception()
    assert isinstance(late, DeadlineExceeded) and late.status == 504 and late.message == "stopped after 2 of 200 rows"
    failed = m.EngineFailed(3, "boom").exception()
    assert not isinstance(failed, Overloaded) and "boom" in str(failed)  # a logged 500


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown message kind 'answr'"):
        m.parse(orjson.loads(b'{"kind": "answr", "id": 1}'))
    with pytest.raises(ValueError, match="unknown message kind None"):
        m.parse({"id": 1})
