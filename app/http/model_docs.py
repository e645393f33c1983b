"""The docs page's entries for every model: for each loaded model and operation, its route with
request and response schemas generated from its card (input and output names, dtypes, shapes)
and a runnable example, as Tesseract derives its OpenAPI from its users' schemas. The committed
spec (`openapi/openapi.json`) has the built-in model's; the served one adds the repository's once
the engines have reported them."""

from __future__ import annotations

import copy
from typing import Any

from app import calls
from app.catalog import VARIABLES, Card, Tensor, variables_fixed
from app.errors import InvalidInput
from app.service import codec
from app.service.problem import open_outputs

SUMMARIES = {
    calls.PREDICT: "the forward pass: its outputs",
    calls.JACOBIAN: "Jacobians of outputs (of) in inputs or variables (wrt), per example along the batch",
    calls.VJP: "vector-Jacobian products with cotangents shaped like the outputs (optional leading K)",
    calls.JVP: "Jacobian-vector products with tangents shaped like the inputs (optional leading K)",
    calls.HESSIAN: "Hessians of outputs (of) in one input (wrt), by nested autodiff",
    calls.HVP: "Hessian-vector products along tangents shaped like the input (optional leading K), or like "
    "another input: the mixed second derivative",
}
ANSWER_KEY = {calls.JACOBIAN: 2, calls.VJP: 1, calls.JVP: 1, calls.HESSIAN: 2, calls.HVP: 2}  # nesting depth


def _array(t: Tensor, lead: int = 0) -> dict[str, Any]:
    """Nested lists as deep as the tensor's rank (plus `lead` axes), of numbers or integers."""
    node: dict[str, Any] = {"type": "number" if t.floating else "integer"}
    for d in reversed((None,) * lead + t.shape):
        node = {"type": "array", "items": node, **({"minItems": d, "maxItems": d} if d is not None else {})}
    shape = ", ".join("any" if d is None else str(d) for d in t.shape)
    return {**node, "description": f"{t.dtype}, shape [{shape}]" + (" with an optional leading K axis" if lead else "")}


def _example(t: Tensor, lead: int = 0) -> Any:
    value: Any = 0.5 if t.floating else 0
    for d in reversed((1,) * lead + t.shape):
        value = [copy.deepcopy(value) for _ in range(2 if d is None else d)]
    return value


def _group(tensors: list[Tensor], lead: int = 0) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {t.name: _array(t, lead) for t in tensors},
        "required": [t.name for t in tensors],
        "additionalProperties": False,
    }


def _nullable(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    """`schema`, or null: what a request leaves out or sends as null is the default."""
    return {"anyOf": [schema, {"type": "null"}], **({"description": description} if description else {})}


def _request(card: Card, op: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request body's schema and an example that runs."""
    wrt_choices = [*card.differentiable, *([VARIABLES] if card.variables else [])]
    floating = [t for t in card.outputs if t.floating]
    props: dict[str, Any] = {"inputs": _group(list(card.inputs))}
    example: dict[str, Any] = {"inputs": {t.name: _example(t) for t in card.inputs}}
    if op != calls.PREDICT:
        props["wrt"] = _nullable({"type": "array", "items": {"enum": wrt_choices}}, "default: every input")
        props["of"] = _nullable(
            {"type": "array", "items": {"enum": [t.name for t in floating]}}, "default: every output"
        )
    if card.dtypes:
        props["dtype"] = _nullable({"enum": list(card.dtypes)}, "the dtype it computes in; default the service's")
    if op == calls.VJP:
        props["cotangents"] = _nullable({**_group(floating, 1), "required": []})
        props["sum_batch"] = {"type": "boolean", "default": False}
        defined = calls.choose_of(card, None, calls.choose_wrt(card, op, None))
        example["cotangents"] = {t.name: _example(t) for t in floating if t.name == defined[0]}
    if op in (calls.JVP, calls.HVP):
        given = [t for t in card.inputs if t.floating]
        props["tangents"] = _nullable({**_group(given, 1), "required": []})
        chosen = given[:1]
        example["tangents"] = {t.name: _example(t) for t in chosen}
        example["wrt"] = [t.name for t in chosen]
    if op == calls.HESSIAN:
        example["wrt"] = card.differentiable[:1]
    if not variables_fixed(card):
        props["variables"] = _nullable(
            {**_group(list(card.variables)), "required": []},
            "values for some or all of its trainable variables: computed at them, the others at the version's",
        )
    schema = {"type": "object", "properties": props, "required": ["inputs"], "additionalProperties": False}
    return schema, example


def _response(card: Card, op: str) -> dict[str, Any]:
    outputs = {"type": "object", "properties": {t.name: _array(t) for t in card.outputs}}
    props: dict[str, Any] = {
        "outputs": outputs,
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "dtype": {"type": "string"},
        "device": {"type": "string"},
    }
    if op in ANSWER_KEY:
        leaf: dict[str, Any] = {"type": "array", "items": {}}
        depth = ANSWER_KEY[op]
        node = {"type": "object", "additionalProperties": leaf}
        if depth == 2:
            node = {"type": "object", "additionalProperties": node}
        props[op] = node
    return {"type": "object", "properties": props}


def _runs(card: Card, op: str) -> bool:
    """Whether the example (`calls.example_call`) is a request the model serves."""
    if op == calls.PREDICT:
        return True
    try:
        calls.example_call(card, op)
    except InvalidInput:
        return False
    return True


def _description(card: Card) -> str:
    """What a request to this model holds, from its card."""
    signature = ", ".join(f"{t.name} ({t.dtype}, shape {list(t.shape)})" for t in card.inputs)
    notes = [f"Inputs by name: {signature}; `null` where the size varies (GET /models/{card.name})."]
    if card.batch:
        notes.append("Examples are independent along the leading axis: derivatives are per example.")
    if card.shared:
        notes.append(f"{', '.join(card.shared)} has no batch axis: one for every example.")
    if card.optional_batch:
        notes.append("One example may be sent without the batch axis; its answer comes without it.")
    if card.dtypes:
        notes.append(f"It computes in {' or '.join(card.dtypes)} (`dtype`).")
    if not variables_fixed(card):
        notes.append(
            "Optional `variables` give its trainable variables values for this request; without a version it "
            f"computes at the newest (version {card.version}), /models/{card.name}/versions/{{version}}/... at "
            "that one."
        )
    return " ".join(notes) + " JSON or npz in (Content-Type) and out (Accept)."


def paths(cards: list[Card], errors: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI path items for every operation of every loaded repository model."""
    found: dict[str, Any] = {}
    for card in (c for c in cards if c.state == "ready"):
        for op in calls.OPERATIONS:
            if not _runs(card, op):
                continue
            schema, example = _request(card, op)
            # Cotangents for an output whose size the signature leaves open cannot be shaped ahead.
            shown = not (op == calls.VJP and open_outputs(card))
            found[f"/models/{card.name}/{op}"] = {
                "post": {
                    "tags": [f"model: {card.name}"],
                    "summary": f"{card.name} (version {card.version}): {SUMMARIES[op]}",
                    "description": _description(card),
                    "operationId": f"model_{card.name}_{op}",
                    "requestBody": {
                        "required": True,
                        "content": {
                            codec.JSON: {"schema": schema, **({"example": example} if shown else {})},
                            codec.NPZ: {
                                "schema": {"type": "string", "format": "binary"},
                                "description": "members inputs/<name>, cotangents/<output>, tangents/<input>, "
                                "variables/<name>; wrt, of and sum_batch in the query",
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Its outputs and derivatives (npz: members outputs/<name>, "
                            "jacobian/<output>/<input>, ...)",
                            "content": {codec.JSON: {"schema": _response(card, op)}},
                        },
                        **errors,
                    },
                }
            }
        if not variables_fixed(card):
            found[f"/models/{card.name}/variables"] = {"put": _push(card, errors)}
    return found


def _push(card: Card, errors: dict[str, Any]) -> dict[str, Any]:
    """PUT /models/{name}/variables: a new version with these values."""
    schema = {
        "type": "object",
        "properties": {"variables": {**_group(list(card.variables)), "required": []}},
        "required": ["variables"],
        "additionalProperties": False,
    }
    example = {"variables": {v.name: _example(v) for v in card.variables[:1]}}
    answer = {"type": "object", "properties": {"model": {"type": "string"}, "version": {"type": "integer"}}}
    return {
        "tags": [f"model: {card.name}"],
        "summary": f"{card.name}: push new values of its variables (a new version, no restart)",
        "description": "Some or all of its trainable variables: a new version, served by every engine before the "
        "answer; requests without a version get it, those in flight finish on theirs. npz: members "
        "variables/<name>.",
        "operationId": f"model_{card.name}_push_variables",
        "requestBody": {
            "required": True,
            "content": {
                codec.JSON: {"schema": schema, "example": example},
                codec.NPZ: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": {
            "200": {"description": "The version made", "content": {codec.JSON: {"schema": answer}}},
            **errors,
        },
    }


def with_models(base: dict[str, Any], cards: list[Card] | None) -> dict[str, Any]:
    """The spec with the models' own routes added: the built-in one's, and the repository's once
    the engines have reported them."""
    if not cards:
        return base
    errors = {k: v for k, v in base["paths"]["/jacobian"]["post"]["responses"].items() if k != "200"}
    spec = dict(base)
    spec["paths"] = {**base["paths"], **paths(cards, errors)}
    return spec
