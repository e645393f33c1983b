"""The TensorFlow side of `jacobian_client.tensorflow`: a served call recorded on the tapes
(`tf.GradientTape`, `tf.autodiff.ForwardAccumulator`) with its backward and forward functions,
each a request, and run under `tf.function` through `tf.numpy_function`."""

from __future__ import annotations

import functools
import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record  # the tapes' own recording: backward and forward functions

from jacobian_client._core import JacobianServiceError
from jacobian_client._remote import NotServed, Remote

F = TypeVar("F", bound=Callable[..., Any])
_raised: OrderedDict[int, JacobianServiceError] = OrderedDict()  # by ticket, the last few
_tickets = itertools.count()
_TICKET = re.compile(r"\[jacobian-service-error (\d+)\]")


def _remembered(error: JacobianServiceError) -> JacobianServiceError:
    """The error with a ticket in its notes, which TensorFlow copies into the graph's error."""
    ticket = next(_tickets)
    _raised[ticket] = error
    while len(_raised) > 64:
        _raised.popitem(last=False)
    error.add_note(f"[jacobian-service-error {ticket}]")
    return error


def function(fn: F | None = None, **options: Any) -> Any:
    """`tf.function(fn, **options)`, whose calls raise a service error as `JacobianServiceError`."""
    if fn is None:
        return lambda fn: function(fn, **options)
    graph = tf.function(fn, **options)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return graph(*args, **kwargs)
        except tf.errors.OpError as e:
            found = _TICKET.search(e.message or "")
            error = _raised.get(int(found.group(1))) if found else None
            if error is None:
                raise
            raise error from e

    call.function = graph  # type: ignore[attr-defined]
    return call


def _static(x: tf.Tensor, name: str) -> tuple[int, ...]:
    if not x.shape.is_fully_defined():
        raise NotServed(f"{name} needs a static shape to be served from TensorFlow; got {x.shape}")
    return tuple(int(d) for d in x.shape)


Run = Callable[[list[np.ndarray], list[np.ndarray]], Sequence[np.ndarray]]


def _requested(
    run: Run,
    xs: Sequence[tf.Tensor],
    vectors: Sequence[tf.Tensor],
    shapes: Sequence[tuple[int, ...]],
    dtypes: Sequence[tf.DType],
) -> list[tf.Tensor]:
    """run(xs, vectors), NumPy in and out, as one `numpy_function` with static shapes, out of every
    tape's sight (its derivatives are recorded by `_record`)."""
    n = len(xs)

    def host(*arrays: np.ndarray) -> list[np.ndarray]:
        a = [np.asarray(x) for x in arrays]
        try:
            found = run(a[:n], a[n:])
        except JacobianServiceError as e:
            raise _remembered(e) from None
        return [np.asarray(f, d.as_numpy_dtype).reshape(s) for f, s, d in zip(found, shapes, dtypes, strict=True)]

    if not dtypes:
        return []
    with record.stop_recording():
        out = tf.numpy_function(host, [*xs, *vectors], list(dtypes), stateful=False)
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    for t, s in zip(out, shapes, strict=True):
        t.set_shape(s)
    return out


Grads = list[tf.Tensor | None]


def _record(
    name: str,
    inputs: Sequence[tf.Tensor],
    outputs: Sequence[tf.Tensor],
    backward: Callable[[list[tf.Tensor | None], list[bool]], Grads],
    forward: Callable[[list[tf.Tensor | None]], Grads],
) -> None:
    """Record an op on the tapes (`backward`: output cotangents -> input gradients, computed only
    for the inputs a tape watches) and the forward accumulators (`forward`: input tangents ->
    output tangents). A missing (co)tangent is None."""
    watched = [bool(record.should_record_backprop([x])) for x in inputs]

    def back(*dys: tf.Tensor | None) -> Grads:
        return backward(list(dys), watched)

    def fwd(*ts: tf.Tensor | None) -> Grads:
        return forward(list(ts))

    record.record_operation(f"jacobian_service_{name}", list(outputs), list(inputs), back, fwd)


def _given(
    values: Sequence[tf.Tensor | None] | Mapping[int, tf.Tensor | None], among: Sequence[int]
) -> dict[int, tf.Tensor]:
    """The (co)tangents present, by index among `among`."""
    return {k: values[k] for k in among if values[k] is not None}


class _Served:
    """One model's outputs with every derivative recorded. `xs` are the flat arguments; products
    keep their vectors by index (cotangents by output, tangents by input)."""

    def __init__(self, remote: Remote, xs: list[tf.Tensor]) -> None:
        self.remote, self.xs, self.n = remote, xs, len(xs)
        shapes = [_static(x, s.name) for x, s in zip(xs, remote.inputs, strict=True)]
        self.specs = remote.out_specs(shapes, [x.dtype.name for x in xs])
        self.inputs = tuple(i for i, x in enumerate(xs) if x.dtype.is_floating)
        self.floating = tuple(o for o, s in enumerate(self.specs) if s.floating)

    def _out(self, outs: Sequence[int]) -> tuple[list[tuple[int, ...]], list[tf.DType]]:
        return [self.specs[o].shape for o in outs], [tf.as_dtype(self.specs[o].dtype) for o in outs]

    def _in(self, ins: Sequence[int]) -> tuple[list[tuple[int, ...]], list[tf.DType]]:
        return [tuple(self.xs[i].shape) for i in ins], [self.xs[i].dtype for i in ins]

    # ---- the forward pass

    def outputs(self) -> list[tf.Tensor]:
        ys = _requested(lambda xs, _: self.remote.apply(xs), self.xs, [], *self._out(range(len(self.specs))))

        def backward(dys: list[tf.Tensor | None], watched: list[bool]) -> Grads:
            wrt = tuple(i for i in self.inputs if watched[i])
            us = _given(dys, self.floating)
            bars = self.vjp(us, wrt) if us and wrt else {}
            return [bars.get(i) for i in range(self.n)]

        def forward(ts: list[tf.Tensor | None]) -> Grads:
            given = _given(ts, self.inputs)
            jvps = self.jvp(given, self.floating) if given else {}
            return [jvps.get(o) for o in range(len(ys))]

        _record("apply", self.xs, ys, backward, forward)
        return ys

    # ---- first-order products, linear in their vectors. A zero vector (a forward accumulator's
    # tangent of an input it does not track) is dropped before the request; all zero, no request.

    def vjp(self, us: dict[int, tf.Tensor], wrt: Sequence[int]) -> dict[int, tf.Tensor]:
        """{output: u} -> {input in wrt: uᵀJ}."""
        outs, shapes = sorted(us), self._in(wrt)

        def run(xs: list[np.ndarray], vs: list[np.ndarray]) -> Sequence[np.ndarray]:
            given = _nonzero(outs, vs)
            return self.remote.vjp(xs, given, (), wrt) if given else _zeros(*shapes)

        bars = _requested(run, self.xs, [us[o] for o in outs], *shapes)

        def backward(dbars: list[tf.Tensor | None], watched: list[bool]) -> Grads:
            ts = {w: d for w, d in zip(wrt, dbars, strict=True) if d is not None}
            gx = self.second(us, ts, [i for i in self.inputs if watched[i]]) if ts else {}
            gu = self.jvp(ts, outs) if ts and any(watched[self.n :]) else {}
            return [gx.get(i) for i in range(self.n)] + [gu.get(o) for o in outs]

        def forward(ts: list[tf.Tensor | None]) -> Grads:
            dx, du = _given(ts, self.inputs), _given(dict(zip(outs, ts[self.n :], strict=True)), outs)
            found = [self.vjp(du, wrt) if du else {}, *(self.second(us, {i: t}, wrt) for i, t in dx.items())]
            return [_total(f.get(w) for f in found) for w in wrt]

        _record("vjp", [*self.xs, *(us[o] for o in outs)], bars, backward, forward)
        return dict(zip(wrt, bars, strict=True))

    def jvp(self, ts: dict[int, tf.Tensor], outs: Sequence[int]) -> dict[int, tf.Tensor]:
        """{input: t} -> {output in outs: J·t}."""
        ins, shapes = sorted(ts), self._out(outs)

        def run(xs: list[np.ndarray], vs: list[np.ndarray]) -> Sequence[np.ndarray]:
            given = _nonzero(ins, vs)
            return self.remote.jvp(xs, given, (), outs) if given else _zeros(*shapes)

        jts = _requested(run, self.xs, [ts[i] for i in ins], *shapes)

        def backward(dys: list[tf.Tensor | None], watched: list[bool]) -> Grads:
            us = {o: d for o, d in zip(outs, dys, strict=True) if d is not None}
            gx = self.second(us, ts, [i for i in self.inputs if watched[i]]) if us else {}
            gt = self.vjp(us, ins) if us and any(watched[self.n :]) else {}
            return [gx.get(i) for i in range(self.n)] + [gt.get(i) for i in ins]

        def forward(tangents: list[tf.Tensor | None]) -> Grads:
            dx, dt = _given(tangents, self.inputs), _given(dict(zip(ins, tangents[self.n :], strict=True)), ins)
            found = [self.jvp(dt, outs) if dt else {}, *(self.hvp(ts, i, s, outs) for i, s in dx.items())]
            return [_total(f.get(o) for f in found) for o in outs]

        _record("jvp", [*self.xs, *(ts[i] for i in ins)], jts, backward, forward)
        return dict(zip(outs, jts, strict=True))

    # ---- second-order products, the end of the line

    def _in_one_input(self, directions: Mapping[int, np.ndarray], i: int) -> np.ndarray | None:
        """The direction in input i, None when every direction is zero; directions in other
        inputs are mixed second derivatives, not served."""
        if set(directions) - {i}:
            raise NotServed(
                f"Mixed second derivatives of {self.remote.name!r} across two inputs are not served; "
                "only second derivatives in one input at a time"
            )
        return directions.get(i)

    def second(self, us: dict[int, tf.Tensor], ts: dict[int, tf.Tensor], wrt: Sequence[int]) -> dict[int, tf.Tensor]:
        """{input i in wrt: Σ_o Σ_w u_oᵀ ∂²y_o/∂x_w∂x_i t_w}, in one input (w = i) only."""
        outs, ins, found = sorted(us), sorted(ts), {}
        vectors = [*(ts[w] for w in ins), *(us[o] for o in outs)]
        for i in wrt:
            shapes = self._in([i])

            def run(
                xs: list[np.ndarray], vs: list[np.ndarray], i: int = i, shapes: Any = shapes
            ) -> Sequence[np.ndarray]:
                t, given = self._in_one_input(_nonzero(ins, vs[: len(ins)]), i), _nonzero(outs, vs[len(ins) :])
                return [self.remote.vhp(xs, i, given, t, (), ())] if t is not None and given else _zeros(*shapes)

            (found[i],) = _requested(run, self.xs, vectors, *shapes)
            _end_of_the_line([*self.xs, *vectors], [found[i]])
        return found

    def hvp(self, ts: dict[int, tf.Tensor], i: int, s: tf.Tensor, outs: Sequence[int]) -> dict[int, tf.Tensor]:
        """{output: Σ_w t_wᵀ ∂²y_o/∂x_w∂x_i s}, in one input (w = i) only."""
        ins, shapes = sorted(ts), self._out(outs)

        def run(xs: list[np.ndarray], vs: list[np.ndarray]) -> Sequence[np.ndarray]:
            t, direction = self._in_one_input(_nonzero(ins, vs[:-1]), i), vs[-1]
            if t is None or not direction.any():
                return _zeros(*shapes)
            return self.remote.hvp2(xs, i, t, direction, (), (), outs)

        vectors = [*(ts[w] for w in ins), s]
        found = _requested(run, self.xs, vectors, *shapes)
        _end_of_the_line([*self.xs, *vectors], found)
        return dict(zip(outs, found, strict=True))


def _nonzero(keys: Sequence[int], vectors: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
    return {k: v for k, v in zip(keys, vectors, strict=True) if v.any()}


def _zeros(shapes: Sequence[tuple[int, ...]], dtypes: Sequence[tf.DType]) -> list[np.ndarray]:
    return [np.zeros(s, d.as_numpy_dtype) for s, d in zip(shapes, dtypes, strict=True)]


def _total(parts: Iterable[tf.Tensor | None]) -> tf.Tensor | None:
    present = [p for p in parts if p is not None]
    return tf.add_n(present) if present else None


def _end_of_the_line(inputs: Sequence[tf.Tensor], outputs: Sequence[tf.Tensor]) -> None:
    """Second-order products have no derivatives here: a tape or accumulator that asks raises."""

    def refuse(*_: Any) -> Grads:
        raise NotServed("Third derivatives are not served; the service computes up to second derivatives")

    record.record_operation("jacobian_service_second_order", list(outputs), list(inputs), refuse, refuse)


def _served(remote: Remote, xs: list[tf.Tensor]) -> list[tf.Tensor]:
    """The model's outputs, with their derivatives from the service."""
    return _Served(remote, xs).outputs()
