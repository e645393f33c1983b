"""Every derivative of a model, by TensorFlow autodiff, over a function of its named inputs
(`ModelFunction`): a SavedModel signature's inlined graph (`app.engine.graphs`) or a model
defined in code (`app.engine.builtin`). Derivatives are taken with `tf.gradients` on the ops
built into the traced function. Jacobians vectorize their reverse passes with pfor
(`tf.vectorized_map`), as `GradientTape`'s do; forward-mode products are reverse-over-reverse (the
gradient, linear in its cotangent, differentiated in that cotangent), since a tape does not see
imported ops. A model may say that every output has the same Hessian (`same_hessian`): it is
computed and returned once per row (an output axis of 1), and the service broadcasts it as a view.

The rows and the names of what comes back are `app.calls`'.
"""

from __future__ import annotations

from typing import Any, Protocol

import tensorflow as tf

from app import calls
from app.calls import Call
from app.catalog import VARIABLES, Card

Tensors = dict[str, tf.Tensor]


class ModelFunction(Protocol):
    """What a kernel differentiates: a model's outputs and variables for named inputs, built into
    the graph being traced. A SavedModel's signature (`Graph`), or a model defined in code
    (`app.engine.builtin.Function`)."""

    @property
    def arguments(self) -> dict[str, str]:  # the inputs' names (keys)
        ...

    @property
    def values(self) -> dict[str, str]:  # the trainable variables whose values each call gives (keys)
        ...

    def __call__(self, inputs: Tensors, values: Tensors | None = None) -> tuple[Tensors, Tensors]: ...


def valued(card: Card, graph: ModelFunction) -> tuple[Any, ...]:
    """The card's trainable variables (`catalog.Tensor`) whose values a call gives, in its order."""
    return tuple(v for v in card.variables if v.name in graph.values)


def _grads(ys: Any, xs: Any, grad_ys: Any = None) -> list[tf.Tensor]:
    # A path only through ops with no gradient (tf.round) is a derivative of zeros, not None.
    found: list[tf.Tensor] = tf.gradients(ys, xs, grad_ys=grad_ys, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return found


def jacobian(y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """(*y, *x): every entry of y differentiated in x, the reverse passes vectorized."""
    flat = tf.reshape(y, [-1])
    J = tf.vectorized_map(lambda j: _grads(tf.gather(flat, j), x)[0], tf.range(tf.size(flat)))
    return tf.reshape(J, tf.concat([tf.shape(y), tf.shape(J)[1:]], 0))


def batch_jacobian(y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """(N, *y[1:], *x[1:]) for rows that do not depend on each other: the gradient of a column of
    y summed over the rows is each row's own."""
    rows = tf.shape(y)[0]
    flat = tf.reshape(y, [rows, -1])
    J = tf.vectorized_map(lambda j: _grads(tf.gather(flat, j, axis=1), x)[0], tf.range(tf.shape(flat)[1]))
    J = _swap01(J)
    return tf.reshape(J, tf.concat([tf.shape(y), tf.shape(x)[1:]], 0))


def _directional(y: tf.Tensor, x: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    """J·t, shaped like y, by reverse over reverse: g(u) = uᵀJ is linear in u, so its derivative
    in u along t is J·t (rows independent: each row's own)."""
    u = tf.zeros_like(y)
    g = _grads([y], [x], grad_ys=[u])
    return _grads(g, [u], grad_ys=[t])[0]


def _swap01(t: tf.Tensor) -> tf.Tensor:
    return tf.transpose(t, [1, 0, *range(2, t.shape.rank)])


def _contract(u: tf.Tensor, y: tf.Tensor, lead: int) -> tf.Tensor:
    """Σ over y's dims of u·y, keeping u's first `lead` axes (u has y's shape after them)."""
    return tf.reduce_sum(u * y, axis=list(range(lead, u.shape.rank)))


class Kernel:
    """One call (`app.calls.Call`) of one model, as a function of its row arrays, then the values
    of its trainable variables (`valued`: every one a graph reads from values), whole."""

    def __init__(self, card: Card, graph: ModelFunction, call: Call) -> None:
        self.card, self.graph, self.call = card, graph, call
        self.batch = card.batch
        self.valued = valued(card, graph)

    def signature(self) -> list[tf.TensorSpec]:
        lead: list[int | None] = [None] if self.batch else [1]
        card, dtype = self.card, self._dtype
        specs = [tf.TensorSpec([*lead, *calls.row_shape(card, t)], dtype(t), name=t.name) for t in card.inputs]
        tensors = {t.name: t for t in card.inputs + card.outputs}
        for n in self.call.product_names():
            t = tensors[n]
            specs.append(tf.TensorSpec([*lead, None, *calls.row_shape(card, t)], dtype(t), name=f"d_{n}"))
        return specs + [tf.TensorSpec(v.shape, v.dtype) for v in self.valued]

    def _dtype(self, t: Any) -> str:
        """A floating tensor's dtype is the call's, for a model that computes in several."""
        return self.call.dtype if self.call.dtype and t.floating else str(t.dtype)

    def __call__(self, *rows: tf.Tensor) -> Tensors:
        n_in, n_values = len(self.card.inputs), len(self.valued)
        given, products = rows[:n_in], rows[n_in : len(rows) - n_values]
        values = {v.name: t for v, t in zip(self.valued, rows[len(rows) - n_values :], strict=True)}
        if not self.batch:  # one row: the model takes the arrays without it
            given = tuple(r[0] for r in given)
            products = tuple(r[0] for r in products)
        xs = {t.name: x for t, x in zip(self.card.inputs, given, strict=True)}
        ys, variables = self.graph(xs, values)
        wrt = {w: xs[w] for w in self.call.inputs_wrt()}
        if VARIABLES in self.call.wrt:
            wrt |= variables
        op = self.call.op
        out = {calls.name("outputs", o): y for o, y in ys.items()}
        if op == calls.JACOBIAN:
            out |= self._jacobians(ys, wrt)
        elif op == calls.VJP:
            out |= self._vjp(ys, wrt, dict(zip(self.call.of, products, strict=True)))
        elif op == calls.JVP:
            out |= self._jvp(ys, wrt, dict(zip(self.call.inputs_wrt(), products, strict=True)))
        elif op == calls.HESSIAN:
            out |= self._hessians(ys, wrt, xs)
        elif op == calls.HVP:
            out |= self._hvp(ys, wrt, products[0], xs)
        if not self.batch:  # the row axis back
            out = {k: v[None] for k, v in out.items()}
        return out

    def _jac(self, y: tf.Tensor, x: tf.Tensor, name: str) -> tf.Tensor:
        """Per row when both have the row axis (a batch model's inputs); whole otherwise."""
        per_row = self.batch and name in self.graph.arguments
        return batch_jacobian(y, x) if per_row else jacobian(y, x)

    def _jacobians(self, ys: Tensors, wrt: Tensors) -> Tensors:
        return {calls.name(calls.JACOBIAN, o, w): self._jac(ys[o], x, w) for o in self.call.of for w, x in wrt.items()}

    def _vjp(self, ys: Tensors, wrt: Tensors, cotangents: Tensors) -> Tensors:
        """Σ_o cotangent_o · ∂y_o: a scalar per row and product, differentiated in each of `wrt`.
        Rows (N, K) for a batch model, (K,) otherwise; summed over the rows with sum_batch."""
        lead = 2 if self.batch else 1
        s = tf.add_n([_contract(u, tf.expand_dims(ys[o], lead - 1), lead) for o, u in cotangents.items()])
        if self.call.single:  # one cotangent: one plain reverse pass, no vectorized loop
            found = self._single_vjp(s, wrt)
        elif self.call.sum_batch:
            total = tf.reduce_sum(s, axis=0)  # (K,)
            found = {w: jacobian(total, x) for w, x in wrt.items()}
            found = {w: tf.reduce_sum(g, axis=1) if w in self.graph.arguments else g for w, g in found.items()}
        else:
            found = {w: self._jac(s, x, w) for w, x in wrt.items()}  # (N, K, ...) or (K, ...)
        return {calls.name(calls.VJP, w): g for w, g in found.items()}

    def _single_vjp(self, s: tf.Tensor, wrt: Tensors) -> Tensors:
        """K = 1: the gradient of Σ s in everything at once (one reverse pass, however many
        variables): each row's own in a batch model's inputs (rows are independent), the sum over
        the rows in the variables or with sum_batch; the K axis added. A variable per example
        (a batch model without sum_batch) is a vectorized Jacobian instead."""
        per_example = {w for w in wrt if self.batch and not self.call.sum_batch and w not in self.graph.arguments}
        summed = [w for w in wrt if w not in per_example]
        found = {w: self._jac(s, wrt[w], w) for w in per_example}
        for w, g in zip(summed, _grads(tf.reduce_sum(s), [wrt[w] for w in summed]), strict=True):
            per_row = self.batch and w in self.graph.arguments
            if per_row and self.call.sum_batch:
                g = tf.reduce_sum(g, axis=0)
            found[w] = tf.expand_dims(g, 1 if per_row and not self.call.sum_batch else 0)
        return {w: found[w] for w in wrt}

    def _along(self, ys: list[tf.Tensor], xs: list[tf.Tensor], tangents: list[tf.Tensor]) -> list[tf.Tensor]:
        """J·t for each y, K tangents each (K first), by reverse over reverse: g(u) = uᵀJ is linear
        in u, so its derivative in u along t is J·t."""
        u = [tf.zeros_like(y) for y in ys]
        g = _grads(ys, xs, grad_ys=u)

        def one(ts: list[tf.Tensor]) -> list[tf.Tensor]:
            return _grads(g, u, grad_ys=ts)

        found: list[tf.Tensor] = tf.vectorized_map(one, tangents)
        return found

    def _swap(self, t: tf.Tensor) -> tf.Tensor:
        """(N, K, ...) <-> (K, N, ...) for a batch model; a model of one row has K first already."""
        return _swap01(t) if self.batch else t

    def _jvp(self, ys: Tensors, wrt: Tensors, tangents: Tensors) -> Tensors:
        of = list(self.call.of)
        per_k = self._along([ys[o] for o in of], list(wrt.values()), [self._swap(tangents[w]) for w in wrt])
        return {calls.name(calls.JVP, o): self._swap(j) for o, j in zip(of, per_k, strict=True)}

    # Second derivatives differentiate one entry's first derivative at a time, vectorized: the
    # Jacobian of the whole (vectorized) Jacobian would take every reverse pass through every
    # entry's first derivative at once, as many times the memory as y has entries per row.

    def _same_hessian(self, w: str, xs: Tensors) -> tf.Tensor | None:
        """The gradient in `w` of a scalar per row whose Hessian is every output's, for a model
        that has one (`same_hessian`, `app.engine.builtin`): its second derivatives are computed
        once, and broadcast over the outputs."""
        same = getattr(self.graph, "same_hessian", None)
        if same is None or not self.batch or w not in self.graph.arguments:
            return None
        return _grads(tf.reduce_sum(same(xs)), xs[w])[0]  # each row's own: rows are independent

    def _hessians(self, ys: Tensors, wrt: Tensors, xs: Tensors) -> Tensors:
        ((w, x),) = wrt.items()
        g = self._same_hessian(w, xs)
        if g is not None:  # (N, 1, *x, *x): one per row, which the service answers as a view for every output
            H = tf.expand_dims(batch_jacobian(g, x), 1)
            return {calls.name(calls.HESSIAN, o, w): H for o in self.call.of}
        return {calls.name(calls.HESSIAN, o, w): self._hessian(ys[o], x, w) for o in self.call.of}

    def _hessian(self, y: tf.Tensor, x: tf.Tensor, name: str) -> tf.Tensor:
        """(N, *y[1:], *x[1:], *x[1:]) per row, (*y, *x, *x) whole: the Jacobian of each entry's gradient."""
        per_row = self.batch and name in self.graph.arguments
        if per_row:
            flat = tf.reshape(y, [tf.shape(y)[0], -1])
            H = tf.vectorized_map(
                lambda j: batch_jacobian(_grads(tf.gather(flat, j, axis=1), x)[0], x), tf.range(tf.shape(flat)[1])
            )
            return tf.reshape(_swap01(H), tf.concat([tf.shape(y), tf.shape(x)[1:], tf.shape(x)[1:]], 0))
        flat = tf.reshape(y, [-1])
        H = tf.vectorized_map(lambda j: jacobian(_grads(tf.gather(flat, j), x)[0], x), tf.range(tf.size(flat)))
        return tf.reshape(H, tf.concat([tf.shape(y), tf.shape(x), tf.shape(x)], 0))

    def _hvp(self, ys: Tensors, wrt: Tensors, tangent: tf.Tensor, xs: Tensors) -> Tensors:
        """(∂/∂x)(J_a·t): the Jacobian in x of each output's J·t, t in input a (x's own, or
        another one's: the mixed second derivative), for each of the K tangents."""
        ((w, x),) = wrt.items()
        a = self.call.along or w
        g = self._same_hessian(w, xs) if a == w else None
        if g is not None:  # one product per row and tangent, broadcast over the outputs
            HV = tf.vectorized_map(lambda t: _grads(tf.reduce_sum(g * t), x)[0], _swap01(tangent))
            HV = tf.expand_dims(_swap01(HV), 2)  # (N, K, 1, *x)
            lead, rest = tf.shape(HV)[:2], tf.shape(HV)[3:]
            return {
                calls.name(calls.HVP, o, w): tf.broadcast_to(HV, tf.concat([lead, tf.shape(ys[o])[1:], rest], 0))
                for o in self.call.of
            }
        out = {}
        for o in self.call.of:

            def one(t: tf.Tensor, y: tf.Tensor = ys[o]) -> tf.Tensor:
                return self._jac(_directional(y, xs[a], t), x, w)

            out[calls.name(calls.HVP, o, w)] = self._swap(tf.vectorized_map(one, self._swap(tangent)))
        return out
