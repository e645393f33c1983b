"""A SavedModel signature's graph, as the kernels (`app.engine.kernels`) take it: inlined (its
nested function calls opened into single ops, so that a derivative walks only the path from the
outputs asked for to the inputs asked for: an op without a gradient on one output's path, such as
`tf.linalg.logm`, leaves the other outputs differentiable), imported into each traced function,
and probed once for the output/input pairs whose gradient TensorFlow does not define.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from app.catalog import VARIABLES, Card

log = logging.getLogger("app.engine")
Tensors = dict[str, tf.Tensor]


@dataclass(frozen=True)
class Graph:
    """A signature's graph, ready to import: its GraphDef, and the names of its arguments,
    captured tensors and outputs in it."""

    graph_def: Any
    arguments: dict[str, str]  # input name -> placeholder
    captured: list[tuple[str, Any]]  # placeholder -> the eager tensor it captures (variable handles, constants)
    outputs: dict[str, str]  # output name -> tensor
    variables: dict[int, str]  # id of a trainable variable's handle -> its name on the card

    @classmethod
    def of(cls, signature: Any, variable_names: list[str]) -> Graph:
        graph_def = _inlined(signature)
        n_args = len(signature.inputs) - len(signature.captured_inputs)
        _args, kwargs = signature.structured_input_signature
        # The placeholders follow the flattened keyword arguments, which are sorted by name.
        arguments = {n: t.name for n, t in zip(sorted(kwargs), signature.inputs[:n_args], strict=True)}
        captured = [(t.name, h) for t, h in zip(signature.inputs[n_args:], signature.captured_inputs, strict=True)]
        keys = tf.nest.flatten({k: k for k in signature.structured_outputs})
        outputs = {k: t.name for k, t in zip(keys, signature.outputs, strict=True)}
        handles = {id(v.handle): n for v, n in zip(signature.trainable_variables, variable_names, strict=True)}
        return cls(graph_def, arguments, captured, outputs, handles)

    def __call__(self, inputs: Tensors) -> tuple[Tensors, Tensors]:
        """The model's outputs for `inputs`, built into the graph being traced, and its trainable
        variables' handles there (what derivatives in the variables are taken in)."""
        graph = tf.compat.v1.get_default_graph()
        handles = {name: graph.capture(h) for name, h in self.captured}
        input_map = {self.arguments[n]: x for n, x in inputs.items()} | handles
        names = list(self.outputs)
        found = tf.graph_util.import_graph_def(
            self.graph_def, input_map=input_map, return_elements=[self.outputs[n] for n in names], name="model"
        )
        variables = {self.variables[id(h)]: handles[p] for p, h in self.captured if id(h) in self.variables}
        return dict(zip(names, found, strict=True)), variables


def _inlined(signature: Any) -> Any:
    """The signature's GraphDef with its function calls inlined: what lets a derivative touch only
    the ops on its own path. Grappler's inliner, as TensorFlow's own freezing uses it; if it
    fails, the graph as saved (derivatives then go through its calls whole)."""
    try:
        return convert_to_constants._run_inline_graph_optimization(
            signature, lower_control_flow=False, aggressive_inlining=True
        )
    except Exception as err:  # a private helper: keep serving if it changes
        log.warning("inlining the signature failed (%s); differentiating its calls whole", err)
        return signature.graph.as_graph_def()


def probe(card: Card, graph: Graph) -> dict[str, dict[str, str]]:
    """For each floating output: the differentiable inputs (and VARIABLES) its gradient is not
    defined in, with the op TensorFlow names. Built in a scratch graph: nothing runs."""
    undefined: dict[str, dict[str, str]] = {}
    with tf.Graph().as_default():
        xs = {t.name: tf.compat.v1.placeholder(t.dtype, t.shape, name=t.name) for t in card.inputs}
        ys, variables = _imported(graph, xs)
        for out in (t for t in card.outputs if t.floating):
            sources = {n: [xs[n]] for n in card.differentiable}
            if variables:
                sources[VARIABLES] = list(variables.values())
            for name, source in sources.items():
                try:
                    tf.gradients(ys[out.name], source)
                except LookupError as err:
                    undefined.setdefault(out.name, {})[name] = _op_named(str(err))
    return undefined


def _imported(graph: Graph, xs: Tensors) -> tuple[Tensors, Tensors]:
    """`graph(xs)` in a v1 graph, with placeholders for what it captures: variable handles, and
    any constant a module holds (`self.idx = tf.constant(...)`), each of its own dtype."""
    stand_ins = {p: tf.compat.v1.placeholder(h.dtype, h.shape, name="captured") for p, h in graph.captured}
    found = tf.graph_util.import_graph_def(
        graph.graph_def,
        input_map={graph.arguments[n]: x for n, x in xs.items()} | stand_ins,
        return_elements=list(graph.outputs.values()),
        name="model",
    )
    variables = {graph.variables[id(h)]: stand_ins[p] for p, h in graph.captured if id(h) in graph.variables}
    return dict(zip(graph.outputs, found, strict=True)), variables


# TensorFlow says it two ways, depending on where it finds out.
_NO_GRADIENT = re.compile(
    r"gradient registry has no entry for: (\w+)|No gradient defined for operation.*?op type: (\w+)"
)


def _op_named(message: str) -> str:
    match = _NO_GRADIENT.search(message)
    return (match.group(1) or match.group(2)) if match else message[:120]
