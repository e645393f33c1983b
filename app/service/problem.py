"""A request to any model, checked against its card before any work (`Problem`): its inputs, what
to differentiate (`wrt`) and in what (`of`), its products, and the call the engine will run (an
`app.calls.Call`, sized). No web imports, no TensorFlow.

Rows: a batch model's arrays keep the client's batch axis B (one example may come without it,
for a model that allows it), its shared inputs are repeated for every example, and products
keep the client's leading K axis (dropped when it sent none); a model without a batch axis is
one row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from app import calls
from app.calls import Call
from app.catalog import Card, Tensor
from app.errors import ModelUnavailable
from app.service.arrays import Sizes, _fail, array_for, check_shape, tensor_text
from app.service.variables import read_variables

OUTPUTS = "outputs"


@dataclass(frozen=True)
class Problem:
    card: Card
    call: Call
    rows: tuple[np.ndarray, ...]  # the engine's row arrays (`app.calls`)
    batch: int | None  # B, for a batch model
    K: int | None  # products per row; None when the client sent no K axis
    input_rows: dict[str, tuple[int, ...]]  # each input's shape per row
    output_rows: dict[str, tuple[int, ...]]  # each output's shape per row (unknown sizes as 1)
    one: bool = False  # one example sent without the batch axis: answered without it
    elements: tuple[int, int] = (0, 0)  # numbers the engine returns per row, and fixed (`sized`)

    @property
    def k(self) -> int:
        return self.K or 1

    @property
    def n_rows(self) -> int:
        return int(self.rows[0].shape[0])


def ready(card: Card) -> Card:
    if card.state != "ready":
        raise ModelUnavailable(f"Model {card.name!r} (version {card.version}) did not load: {card.reason}")
    return card


def _batched(card: Card, t: Tensor) -> bool:
    return card.batch and t.name not in card.shared


def _one_example(card: Card, arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether a model that takes it was sent one example without the batch axis."""
    batched = [t for t in card.inputs if _batched(card, t)]
    return card.optional_batch and bool(batched) and all(arrays[t.name].ndim == len(t.shape) - 1 for t in batched)


def read_inputs(
    card: Card, given: Mapping[str, Any], dtype: str = "", sizes: Sizes | None = None
) -> tuple[dict[str, np.ndarray], bool]:
    """The inputs as arrays of the computation's dtypes, checked against the card's shapes and
    each other's sizes; and whether they are one example sent without the batch axis (given it)."""
    names = [t.name for t in card.inputs]
    missing = [n for n in names if n not in given]
    unknown = sorted(set(given) - set(names))
    if missing or unknown:
        signature = ", ".join(tensor_text(t) for t in card.inputs)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else []
        )
        raise _fail(["inputs"], f"Model {card.name!r} takes inputs {signature}; {'; '.join(parts)}")
    arrays = {t.name: array_for(_as(t, dtype), given[t.name], ["inputs", t.name]) for t in card.inputs}
    one = _one_example(card, arrays)
    sizes = sizes if sizes is not None else Sizes()
    for t in card.inputs:
        a, loc, single = arrays[t.name], ["inputs", t.name], one and _batched(card, t)
        check_shape(t, a, loc, one=single)
        if a.size == 0:
            raise _fail(loc, f"inputs.{t.name} is empty (shape {list(a.shape)})")
        sizes.bind(t, a, loc, one=single)
        if single:
            arrays[t.name] = a[None]
    if card.batch:
        batch = {n: a.shape[0] for n, a in arrays.items() if n not in card.shared}
        if len(set(batch.values())) > 1:
            raise _fail(["inputs"], f"the inputs' batch sizes differ: {batch}; every input needs one row per example")
    return arrays, one


def _as(t: Tensor, dtype: str) -> Tensor:
    """The tensor in the computation's dtype (a model that computes in several)."""
    return replace(t, dtype=dtype) if dtype and t.floating else t


def _products(
    card: Card,
    given: Mapping[str, Any],
    field: str,
    tensors: dict[str, Tensor],
    batch: int | None,
    one: bool = False,
    sizes: Sizes | None = None,
    dtype: str = "",
) -> tuple[dict[str, np.ndarray], int | None]:
    """Cotangents (shaped like outputs) or tangents (like inputs), each with an optional leading
    K axis (the same for all), as the engine's rows: (B, K, ...) or (1, K, ...). A shared
    input's tangents are the same for every example."""
    arrays, ks = {}, set()
    for name, value in given.items():
        t = tensors[name]
        a = array_for(_as(t, dtype), value, [field, name])
        single = one and _batched(card, t)
        has_k = a.ndim == len(t.shape) - int(single) + 1
        check_shape(t, a, [field, name], lead=int(has_k), one=single)
        if sizes is not None:
            sizes.bind(t, a, [field, name], lead=int(has_k), one=single)
        k_first = a if has_k else a[None]
        if single:
            k_first = k_first[:, None]
        elif _batched(card, t) and k_first.shape[1] != batch:
            raise _fail([field, name], f"{field}.{name} has {k_first.shape[1]} examples but the inputs have {batch}")
        ks.add(a.shape[0] if has_k else None)
        if has_k and a.shape[0] == 0:
            raise _fail([field, name], f"{field}.{name} has K = 0; send at least one")
        if not card.batch:
            arrays[name] = k_first[None]
        elif name in card.shared:  # (K, ...) -> (B, K, ...), a view
            arrays[name] = np.broadcast_to(k_first, (batch or 1, *k_first.shape))
        else:
            arrays[name] = np.ascontiguousarray(np.moveaxis(k_first, 0, 1))
    if len(ks) > 1:
        raise _fail([field], f"the {field} disagree on K (the leading axis): some have it, or it differs")
    return arrays, ks.pop() if ks else None


def problem(
    card: Card,
    op: str,
    inputs: Mapping[str, Any],
    wrt: Sequence[str] | None = None,
    of: Sequence[str] | None = None,
    cotangents: Mapping[str, Any] | None = None,
    tangents: Mapping[str, Any] | None = None,
    sum_batch: bool = False,
    dtype: str | None = None,
    default_dtype: str = "float32",
    variables: Mapping[str, Any] | None = None,
    version: int | None = None,
) -> Problem:
    ready(card)
    values = read_variables(card, variables) if variables else {}
    computed_in = _dtype(card, dtype, _widest(inputs) or default_dtype)
    sizes = Sizes()
    arrays, one = read_inputs(card, inputs, computed_in, sizes)
    batch = next(a.shape[0] for n, a in arrays.items() if n not in card.shared) if card.batch else None
    outputs = {t.name: t for t in card.outputs}
    products: dict[str, np.ndarray] = {}
    K = None
    _refuse_extra(op, cotangents, tangents, sum_batch, card)
    along = ""  # hvp's tangents' input, when not wrt's
    given = (batch, one, sizes, computed_in)
    if op == calls.PREDICT:
        chosen_wrt: tuple[str, ...] = ()
        chosen_of: tuple[str, ...] = ()
    elif op == calls.VJP:
        if not cotangents:
            raise _fail(
                ["cotangents"], f"vjp needs cotangents: {{output: array shaped like it}}, outputs {list(outputs)}"
            )
        for o in cotangents:
            if o not in outputs or not outputs[o].floating:
                floating = [t.name for t in card.outputs if t.floating]
                raise _fail(
                    ["cotangents", o], f"{o!r} is not a floating output of {card.name!r}; choose from {floating}"
                )
        chosen_wrt = calls.choose_wrt(card, op, wrt)
        chosen_of = calls.choose_of(card, of if of is not None else list(cotangents), chosen_wrt)
        if set(chosen_of) != set(cotangents):
            raise _fail(["cotangents"], f"cotangents must be given for exactly the outputs in of: {list(chosen_of)}")
        products, K = _products(card, {o: cotangents[o] for o in chosen_of}, "cotangents", outputs, *given)
    elif op in (calls.JVP, calls.HVP):
        if not tangents:
            raise _fail(["tangents"], f"{op} needs tangents: {{input: array shaped like it}}")
        chosen_wrt = calls.choose_wrt(card, op, wrt, default=list(tangents))
        along = _mixed(card, op, tangents, chosen_wrt)
        chosen_of = calls.choose_of(card, of, chosen_wrt)
        tensors = {t.name: t for t in card.inputs}
        given_in = (along,) if along else chosen_wrt
        products, K = _products(card, {w: tangents[w] for w in given_in}, "tangents", tensors, *given)
    else:
        chosen_wrt = calls.choose_wrt(card, op, wrt)
        chosen_of = calls.choose_of(card, of, chosen_wrt)
    rows = tuple(calls.as_rows(card, arrays)) + tuple(products.values()) + tuple(values.values())
    input_rows = {t.name: tuple(arrays[t.name].shape[1 if calls.row_axis(card, t) else 0 :]) for t in card.inputs}
    # An output size the signature leaves open counts as 1 until a forward pass has shown it (`serve`).
    output_rows = {t.name: _known(card, t, sizes) for t in card.outputs}
    single = op == calls.VJP and (K or 1) == 1
    # Requests with their own variables run alone: stacked rows share one set of values.
    stack = card.batch and not sum_batch and not values
    call = Call(
        op,
        chosen_wrt,
        chosen_of,
        sum_batch,
        stack=stack,
        single=single,
        dtype=computed_in if card.dtypes else "",
        variables=tuple(values),
        version=version or 0,
        along=along,
    )
    return sized(Problem(card, call, rows, batch, K, input_rows, output_rows, one))


def _mixed(card: Card, op: str, tangents: Mapping[str, Any], wrt: tuple[str, ...]) -> str:
    """hvp's tangents in another input than wrt's: the mixed second derivative, along that input
    (""; its own Hessian's product when they are wrt's). Otherwise they must be wrt's."""
    if set(tangents) == set(wrt):
        return ""
    (given,) = tangents if op == calls.HVP and len(tangents) == 1 else ("",)
    if given and given in card.differentiable:
        return str(given)
    mixed = " (or, for hvp, in one other differentiable input: the mixed derivative)" if op == calls.HVP else ""
    raise _fail(["tangents"], f"tangents must be given for exactly the inputs in wrt: {list(wrt)}{mixed}")


def _dtype(card: Card, asked: str | None, default: str) -> str:
    """The dtype a model that offers several computes in ("" for one that computes in its signature's)."""
    if not card.dtypes:
        if asked is not None:
            raise _fail(
                ["dtype"],
                f"Model {card.name!r} computes in its signature's dtypes; dtype is for models that offer several",
            )
        return ""
    chosen = asked or (default if default in card.dtypes else card.dtypes[0])
    if chosen not in card.dtypes:
        raise _fail(["dtype"], f"Model {card.name!r} computes in {' or '.join(card.dtypes)}, not {chosen}")
    return chosen


def _widest(inputs: Mapping[str, Any]) -> str | None:
    """The widest floating dtype of inputs that came as arrays (npz, V2 binary data), as the
    original endpoints choose for npz; None for JSON lists."""
    dtypes = [a.dtype for a in inputs.values() if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    return str(np.result_type(*dtypes)) if dtypes and len(dtypes) == len(inputs) else None


def _known(card: Card, t: Tensor, sizes: Sizes) -> tuple[int, ...]:
    """An output's shape per row, its open sizes bound by the inputs' where the card names them (else 1)."""
    dims, symbols = calls.row_shape(card, t), calls.row_symbols(card, t)
    return tuple(d if d is not None else sizes.bound.get(s, (1, ""))[0] for d, s in zip(dims, symbols, strict=True))


def sized(p: Problem) -> Problem:
    """The problem with its call sized (`app.calls.sized`) and its numbers counted (`Problem.elements`)."""
    call, elements = calls.sized(p.card, p.call, p.k, p.input_rows, p.output_rows)
    return replace(p, call=call, elements=elements)


def open_outputs(card: Card) -> bool:
    """Whether an output's size (beyond the batch) is left open by the signature, and not named by
    the card as one of its inputs'."""
    named = {s for t in card.inputs for s in t.symbols if s}
    for t in card.outputs:
        symbols = calls.row_symbols(card, t)
        if any(d is None and s not in named for d, s in zip(calls.row_shape(card, t), symbols, strict=True)):
            return True
    return False


def _refuse_extra(op: str, cotangents: Any, tangents: Any, sum_batch: bool, card: Card) -> None:
    if cotangents and op != calls.VJP:
        raise _fail(["cotangents"], f"cotangents are for vjp; {op} takes none")
    if tangents and op not in (calls.JVP, calls.HVP):
        raise _fail(["tangents"], f"tangents are for jvp and hvp; {op} takes none")
    if sum_batch and op != calls.VJP:
        raise _fail(["sum_batch"], f"sum_batch is for vjp; {op} takes none")
    if sum_batch and not card.batch:
        raise _fail(["sum_batch"], f"sum_batch needs a batch model; {card.name!r} has no batch axis")


def engine_shapes(p: Problem) -> dict[str, tuple[int, ...]]:
    return calls.output_shapes(p.card, p.call, p.n_rows, p.k, p.input_rows, p.output_rows)
