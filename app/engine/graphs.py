"""A SavedModel signature's graph, as the kernels (`app.engine.kernels`) take it: inlined (its
nested function calls opened into single ops, so that a derivative walks only the path from the
outputs asked for to the inputs asked for: an op without a gradient on one output's path, such as
`tf.linalg.logm`, leaves the other outputs differentiable), imported into each traced function,
and probed once for the output/input pairs whose gradient TensorFlow does not define.

Its trainable variables are read from values given to each call (the version's, or a request's
own), not from the variables: every read (`ReadVariableOp`, through the handle's identities) is
rewritten to read a placeholder instead, so one traced function serves every version, nothing
is retraced when weights change, and derivatives in the variables are taken in those values. A
graph that uses a variable otherwise (an op that takes the handle itself) keeps its stored values.
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
    # A trainable variable's name -> the placeholder its reads take their value from (every one's,
    # or none's when `fixed_by` names an op that uses a handle otherwise).
    values: dict[str, str]
    fixed_by: str = ""

    @classmethod
    def of(cls, signature: Any, variable_names: list[str]) -> Graph:
        graph_def = _inlined(signature)
        n_args = len(signature.inputs) - len(signature.captured_inputs)
        _args, kwargs = signature.structured_input_signature
        # The placeholders follow the flattened keyword arguments, which are sorted by name.
        arguments = {n: t.name for n, t in zip(sorted(kwargs), signature.inputs[:n_args], strict=True)}
        captured = [(t.name, h) for t, h in captured_pairs(signature)]
        keys = tf.nest.flatten({k: k for k in signature.structured_outputs})
        outputs = {k: t.name for k, t in zip(keys, signature.outputs, strict=True)}
        handles = {id(v.handle): n for v, n in zip(signature.trainable_variables, variable_names, strict=True)}
        placeholders = {t.name: handles[id(h)] for t, h in captured_pairs(signature) if id(h) in handles}
        dtypes = {n: v.dtype for v, n in zip(signature.trainable_variables, variable_names, strict=True)}
        values, fixed_by = _values_read(graph_def, placeholders, dtypes)
        return cls(graph_def, arguments, captured, outputs, handles, values, fixed_by)

    def __call__(self, inputs: Tensors, values: Tensors | None = None) -> tuple[Tensors, Tensors]:
        """The model's outputs for `inputs` and its trainable variables' `values`, built into the
        graph being traced, and those values (the handles, for a graph whose variables are fixed):
        what derivatives in the variables are taken in."""
        graph = tf.compat.v1.get_default_graph()
        handles = {name: graph.capture(h) for name, h in self.captured}
        given = values or {}
        input_map = {self.arguments[n]: x for n, x in inputs.items()} | handles
        input_map |= {self.values[n]: v for n, v in given.items()}
        names = list(self.outputs)
        found = tf.graph_util.import_graph_def(
            self.graph_def, input_map=input_map, return_elements=[self.outputs[n] for n in names], name="model"
        )
        variables = {self.variables[id(h)]: handles[p] for p, h in self.captured if id(h) in self.variables}
        return dict(zip(names, found, strict=True)), variables | given


def captured_pairs(signature: Any) -> list[tuple[Any, Any]]:
    """(placeholder, captured eager tensor) for what the signature captures."""
    n_args = len(signature.inputs) - len(signature.captured_inputs)
    return list(zip(signature.inputs[n_args:], signature.captured_inputs, strict=True))


def _values_read(graph_def: Any, placeholders: dict[str, str], dtypes: dict[str, Any]) -> tuple[dict[str, str], str]:
    """Rewrite `graph_def` in place so that every read of a trainable variable (a ReadVariableOp
    of its handle's placeholder, through identities) reads a new placeholder of its value: the
    placeholders by variable name. If some op uses a handle otherwise, nothing is rewritten and
    that op is named: the graph then reads the variables themselves."""
    consumers: dict[str, list[Any]] = {}
    for node in graph_def.node:
        for inp in node.input:
            if not inp.startswith("^"):
                consumers.setdefault(inp.split(":")[0], []).append(node)
    reads: dict[str, list[Any]] = {}
    for tensor, name in placeholders.items():
        frontier = [tensor.split(":")[0]]
        while frontier:
            for node in consumers.get(frontier.pop(), []):
                if node.op == "Identity":
                    frontier.append(node.name)
                elif node.op == "ReadVariableOp":
                    reads.setdefault(name, []).append(node)
                else:
                    return {}, node.op
    values = {}
    for k, (name, dtype) in enumerate(dtypes.items()):
        value = graph_def.node.add(name=f"jacobian_variable_value_{k}", op="Placeholder")
        value.attr["dtype"].type = dtype.as_datatype_enum
        values[name] = f"{value.name}:0"
        for read in reads.get(name, []):
            controls = [i for i in read.input if i.startswith("^")]
            read.op = "Identity"
            read.ClearField("input")
            read.input.extend([value.name, *controls])
            read.attr.clear()
            read.attr["T"].type = dtype.as_datatype_enum
    return values, ""


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
        values = {v.name: tf.compat.v1.placeholder(v.dtype, v.shape) for v in card.variables if v.name in graph.values}
        ys, variables = _imported(graph, xs, values)
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


def _imported(graph: Graph, xs: Tensors, values: Tensors) -> tuple[Tensors, Tensors]:
    """`graph(xs, values)` in a v1 graph, with placeholders for what it captures: variable handles,
    and any constant a module holds (`self.idx = tf.constant(...)`), each of its own dtype."""
    stand_ins = {p: tf.compat.v1.placeholder(h.dtype, h.shape, name="captured") for p, h in graph.captured}
    found = tf.graph_util.import_graph_def(
        graph.graph_def,
        input_map={graph.arguments[n]: x for n, x in xs.items()}
        | stand_ins
        | {graph.values[n]: v for n, v in values.items()},
        return_elements=list(graph.outputs.values()),
        name="model",
    )
    variables = {graph.variables[id(h)]: stand_ins[p] for p, h in graph.captured if id(h) in graph.variables}
    return dict(zip(graph.outputs, found, strict=True)), variables | values


# TensorFlow says it two ways, depending on where it finds out.
_NO_GRADIENT = re.compile(
    r"gradient registry has no entry for: (\w+)|No gradient defined for operation.*?op type: (\w+)"
)


def _op_named(message: str) -> str:
    match = _NO_GRADIENT.search(message)
    return (match.group(1) or match.group(2)) if match else message[:120]
