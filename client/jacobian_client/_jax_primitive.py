"""The JAX primitive that carries every request of `jacobian_client.jax`, and its rules (there)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jacobian_client._remote import Lead, NotServed, Remote

served_p = Primitive("jacobian_service")
served_p.multiple_results = True

APPLY, JVP, VJP, VHP, HVP2 = "apply", "jvp", "vjp", "vhp", "hvp2"


# ---- what each request takes and gives


def _group_sizes(op: str, ins: tuple[int, ...], outs: tuple[int, ...]) -> list[int]:
    """How the arrays after the arguments are grouped: tangents, cotangents, directions."""
    return {APPLY: [], JVP: [len(ins)], VJP: [len(outs)], VHP: [len(outs), 1], HVP2: [1, 1]}[op]


def _split(args: Sequence[Any], n: int, sizes: list[int]) -> list[list[Any]]:
    groups, at = [], n
    for size in sizes:
        groups.append(list(args[at : at + size]))
        at += size
    return groups


def _result_avals(
    args: Sequence[Any], remote: Remote, op: str, ins: tuple[int, ...], outs: tuple[int, ...], leads: tuple[Lead, ...]
) -> list[jax.ShapeDtypeStruct]:
    xs = args[: len(remote.inputs)]
    specs = remote.specs(xs)

    def aval(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, jax.dtypes.canonicalize_dtype(np.dtype(dtype)))

    lead = tuple(d for lead in leads for d in lead)
    if op == APPLY:
        return [aval(s.shape, s.dtype) for s in specs]
    if op in (JVP, HVP2):
        return [aval((*lead, *specs[o].shape), specs[o].dtype) for o in outs]
    return [aval((*lead, *xs[i].shape), xs[i].dtype) for i in ins]  # VJP, VHP


def _host(
    remote: Remote, op: str, ins: tuple[int, ...], outs: tuple[int, ...], leads: tuple[Lead, ...]
) -> Callable[..., list[np.ndarray]]:
    """The request, on NumPy arrays: what the primitive's impl and its callback run."""

    def run(*arrays: Any) -> list[np.ndarray]:
        given = [np.asarray(a) for a in arrays]
        n = len(remote.inputs)
        xs, groups = given[:n], _split(given, n, _group_sizes(op, ins, outs))
        if op == APPLY:
            found = remote.apply(xs)
        elif op == JVP:
            found = remote.jvp(xs, dict(zip(ins, groups[0], strict=True)), leads[0], outs)
        elif op == VJP:
            found = remote.vjp(xs, dict(zip(outs, groups[0], strict=True)), leads[0], ins)
        elif op == VHP:
            found = [remote.vhp(xs, ins[0], dict(zip(outs, groups[0], strict=True)), groups[1][0], *leads)]
        else:
            found = remote.hvp2(xs, ins[0], groups[0][0], groups[1][0], leads[0], leads[1], outs)
        avals = _result_avals(given, remote, op, ins, outs, leads)
        return [np.asarray(a, dtype=v.dtype).reshape(v.shape) for a, v in zip(found, avals, strict=True)]

    return run


def _bind(
    *args: Any,
    remote: Remote,
    op: str,
    ins: tuple[int, ...] = (),
    outs: tuple[int, ...] = (),
    leads: tuple[Lead, ...] = (),
) -> list[Any]:
    return served_p.bind(*args, remote=remote, op=op, ins=tuple(ins), outs=tuple(outs), leads=tuple(leads))


def _impl(*args: Any, **params: Any) -> list[jax.Array]:
    return [jnp.asarray(a) for a in _host(**params)(*args)]


def _abstract(*args: Any, **params: Any) -> list[jax.core.ShapedArray]:
    return [jax.core.ShapedArray(a.shape, a.dtype) for a in _result_avals(args, **params)]


def _callback(*args: Any, **params: Any) -> list[jax.Array]:
    shapes = _result_avals(args, **params)
    return list(jax.pure_callback(_host(**params), shapes, *args))


served_p.def_impl(_impl)
served_p.def_abstract_eval(_abstract)
mlir.register_lowering(served_p, mlir.lower_fun(_callback, multiple_results=True))


# ---- differentiation


def _zero(t: Any) -> bool:
    return type(t) is ad.Zero


def _floating(x: Any) -> bool:
    return bool(jnp.issubdtype(x.dtype, jnp.floating))


def _sum(pieces: list[list[Any]], avals: list[Any]) -> list[Any]:
    if not pieces:
        return [ad.Zero(a.to_tangent_aval()) for a in avals]
    return [sum(column[1:], column[0]) for column in zip(*pieces, strict=True)]


def _jvp_rule(
    primals: Sequence[Any],
    tangents: Sequence[Any],
    *,
    remote: Remote,
    op: str,
    ins: tuple[int, ...],
    outs: tuple[int, ...],
    leads: tuple[Lead, ...],
) -> tuple[list[Any], list[Any]]:
    n = len(remote.inputs)
    params: dict[str, Any] = {"remote": remote, "op": op, "ins": ins, "outs": outs, "leads": leads}
    out = _bind(*primals, **params)
    avals = [jax.typeof(o) for o in out]
    xs, tx = list(primals[:n]), tangents[:n]
    moving = tuple(i for i in range(n) if not _zero(tx[i]) and _floating(xs[i]))
    if op == APPLY:
        floating = tuple(o for o, a in enumerate(avals) if jnp.issubdtype(a.dtype, jnp.floating))
        if not moving or not floating:
            return out, [ad.Zero(a.to_tangent_aval()) for a in avals]
        dots = _bind(*xs, *[tx[i] for i in moving], remote=remote, op=JVP, ins=moving, outs=floating, leads=((),))
        by_output = dict(zip(floating, dots, strict=True))
        return out, [by_output[o] if o in by_output else ad.Zero(a.to_tangent_aval()) for o, a in enumerate(avals)]
    groups = _split(primals, n, _group_sizes(op, ins, outs))
    dgroups = _split(tangents, n, _group_sizes(op, ins, outs))
    pieces = []
    for g, dg in enumerate(dgroups):  # linear (bilinear) in its vectors: the same product along each
        if any(not _zero(t) for t in dg):
            swapped = [list(v) for v in groups]
            swapped[g] = [ad.instantiate_zeros(t) for t in dg]
            pieces.append(_bind(*xs, *[a for v in swapped for a in v], **params))
    if moving:
        pieces.append(_second_order(xs, tx, moving, groups, remote, op, ins, outs, leads))
    return out, _sum(pieces, avals)


def _second_order(
    xs: list[Any],
    tx: Sequence[Any],
    moving: tuple[int, ...],
    groups: list[list[Any]],
    remote: Remote,
    op: str,
    ins: tuple[int, ...],
    outs: tuple[int, ...],
    leads: tuple[Lead, ...],
) -> list[Any]:
    """A product's derivative in the arguments: a Hessian product in one input."""
    if op in (VHP, HVP2):
        raise NotServed(f"Third derivatives of {remote.name!r} are not served: the service stops at Hessians")
    if len(ins) != 1 or moving != ins:
        names = sorted({remote.inputs[i].name for i in ins + moving})
        raise NotServed(
            f"Second derivatives of {remote.name!r} across inputs {names} are not served: the service's Hessians "
            "are in one input at a time (differentiate in one argument, close over the others)"
        )
    (w,) = ins
    s = tx[w]
    if op == JVP:  # d/dx [J t] along s = tᵀ H s, per output
        return _bind(*xs, groups[0][0], s, remote=remote, op=HVP2, ins=ins, outs=outs, leads=(leads[0], ()))
    return _bind(*xs, *groups[0], s, remote=remote, op=VHP, ins=ins, outs=outs, leads=(leads[0], ()))  # uᵀ H s


def _transpose_rule(
    cts: Sequence[Any],
    *args: Any,
    remote: Remote,
    op: str,
    ins: tuple[int, ...],
    outs: tuple[int, ...],
    leads: tuple[Lead, ...],
) -> list[Any]:
    n = len(remote.inputs)
    xs = list(args[:n])
    if any(ad.is_undefined_primal(x) for x in xs):
        raise NotServed(f"A product of {remote.name!r} is linear in its vectors only, not in the model's arguments")
    groups = _split(args, n, _group_sizes(op, ins, outs))
    none_before = [None] * n
    if op == JVP:  # t -> J t, transposed: u -> uᵀ J
        given = [(o, ct) for o, ct in zip(outs, cts, strict=True) if not _zero(ct)]
        if not given:
            return none_before + [None] * len(ins)
        bars = _bind(
            *xs, *[ct for _, ct in given], remote=remote, op=VJP, ins=ins, outs=tuple(o for o, _ in given), leads=leads
        )
        return none_before + bars
    if op == VJP:  # u -> uᵀ J, transposed: t -> J t
        given = [(i, ct) for i, ct in zip(ins, cts, strict=True) if not _zero(ct)]
        if not given:
            return none_before + [None] * len(outs)
        bars = _bind(
            *xs, *[ct for _, ct in given], remote=remote, op=JVP, ins=tuple(i for i, _ in given), outs=outs, leads=leads
        )
        return none_before + bars
    if any(leads):
        raise NotServed(f"Reverse mode over a batch of second-order products of {remote.name!r} is not served")
    if op == VHP:  # (u, s) -> Σ_o u_o H_o s, symmetric in s
        (ct,) = cts
        us, (s,) = groups
        if _zero(ct):
            return none_before + [None] * (len(us) + 1)
        if ad.is_undefined_primal(s):
            bar = _bind(*xs, *us, ct, remote=remote, op=VHP, ins=ins, outs=outs, leads=((), ()))
            return none_before + [None] * len(us) + bar
        bars = _bind(*xs, ct, s, remote=remote, op=HVP2, ins=ins, outs=outs, leads=((), ()))
        return none_before + bars + [None]
    # HVP2: (t, s) -> tᵀ H_o s for each output
    (t,), (s,) = groups
    given = [(o, ct) for o, ct in zip(outs, cts, strict=True) if not _zero(ct)]
    if not given:
        return [*none_before, None, None]
    known = s if ad.is_undefined_primal(t) else t
    (bar,) = _bind(
        *xs,
        *[ct for _, ct in given],
        known,
        remote=remote,
        op=VHP,
        ins=ins,
        outs=tuple(o for o, _ in given),
        leads=((), ()),
    )
    return none_before + ([bar, None] if ad.is_undefined_primal(t) else [None, bar])


ad.primitive_jvps[served_p] = _jvp_rule
ad.primitive_transposes[served_p] = _transpose_rule


# ---- batching


def _batch_rule(
    args: Sequence[Any],
    dims: Sequence[int | None],
    *,
    remote: Remote,
    op: str,
    ins: tuple[int, ...],
    outs: tuple[int, ...],
    leads: tuple[Lead, ...],
) -> tuple[list[Any], list[int]]:
    n = len(remote.inputs)
    params: dict[str, Any] = {"remote": remote, "op": op, "ins": ins, "outs": outs, "leads": leads}
    sizes = _group_sizes(op, ins, outs)
    gdims = _split(dims, n, sizes)
    mapped = [g for g, d in enumerate(gdims) if any(x is not None for x in d)]
    if any(d is not None for d in dims[:n]) or len(mapped) > 1:
        return _one_by_one(args, dims, params)
    (g,) = mapped
    groups = _split(args, n, sizes)
    size = next(a.shape[d] for a, d in zip(groups[g], gdims[g], strict=True) if d is not None)
    groups[g] = [
        jnp.moveaxis(a, d, 0) if d is not None else jnp.broadcast_to(a, (size, *a.shape))
        for a, d in zip(groups[g], gdims[g], strict=True)
    ]
    new = tuple((size, *lead) if h == g else lead for h, lead in enumerate(leads))
    out = _bind(*args[:n], *[a for v in groups for a in v], remote=remote, op=op, ins=ins, outs=outs, leads=new)
    at = sum(len(lead) for lead in leads[:g])  # the new axis sits before this group's own leading axes
    return out, [at] * len(out)


def _one_by_one(args: Sequence[Any], dims: Sequence[int | None], params: dict[str, Any]) -> tuple[list[Any], list[int]]:
    """The model's own arguments mapped (or two kinds of vectors at once): one request each."""
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    moved = tuple(
        jnp.moveaxis(a, d, 0) if d is not None else jnp.broadcast_to(a, (size, *a.shape))
        for a, d in zip(args, dims, strict=True)
    )
    out = jax.lax.map(lambda row: tuple(_bind(*row, **params)), moved)
    return list(out), [0] * len(out)


batching.primitive_batchers[served_p] = _batch_rule
