"""A model repository in TF Serving's layout, `<root>/<model>/<version>/saved_model.pb`: each
model's highest version loaded through its `serving_default` signature, described by a card
(`app.catalog.Card`), and probed once for the output/input pairs whose gradient TensorFlow does
not define. A model that fails to load is a card with its reason; the others are served.

The object `tf.saved_model.load` returns is kept with its signature: a signature alone loses its
variables when that object is collected.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from app.catalog import VARIABLES, Card, Tensor
from app.engine import graphs, kernels
from app.engine.versions import Versions

log = logging.getLogger("app.engine")
SIGNATURE = "serving_default"


@dataclass
class Loaded:
    card: Card
    signature: Any = None  # the serving_default concrete function
    graph: kernels.ModelFunction | None = None  # its graph, inlined, for the derivatives (or a built-in's function)
    keep: Any = field(default=None, repr=False)  # what tf.saved_model.load returned
    versions: Versions | None = None  # its variables' values, as loaded and as pushed


def versions(root: Path) -> dict[str, tuple[int, Path]]:
    """Each model's highest numeric version holding a saved_model.pb."""
    found: dict[str, tuple[int, Path]] = {}
    for model in sorted(p for p in root.iterdir() if p.is_dir()):
        numbered = [(int(v.name), v) for v in model.iterdir() if v.is_dir() and v.name.isdigit()]
        with_graph = [(n, v) for n, v in numbered if (v / "saved_model.pb").is_file()]
        if with_graph:
            found[model.name] = max(with_graph)
        elif numbered:
            found[model.name] = max(numbered)  # loading it says what is missing
    return found


def load_repository(root: str | Path, reserved: tuple[str, ...] = (), keep: int = 2) -> dict[str, Loaded]:
    """Every model of the repository; a folder that is not there is logged, and the built-in models
    serve alone (an engine that exited on it would be restarted into the same exit). A folder
    named as a built-in model (`reserved`) is a failed card."""
    loaded: dict[str, Loaded] = {}
    if not Path(root).is_dir():
        log.error("the model repository %s is not a readable folder: serving the built-in models only", root)
        return loaded
    for name, (version, path) in versions(Path(root)).items():
        if name in reserved:  # its routes and V2 names are the built-in model's
            loaded[name] = Loaded(
                Card(name, version, "failed", f"{name!r} is a built-in model's name; rename the folder")
            )
        else:
            loaded[name] = load(name, version, path, keep)
    return loaded


def load(name: str, version: int, path: Path, keep: int = 2) -> Loaded:
    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures.get(SIGNATURE)
        if signature is None:
            raise ValueError(f"it has no {SIGNATURE!r} signature (it has {sorted(loaded.signatures) or 'none'})")
        card, graph = describe(name, version, signature, _batch_setting(path))
    except Exception as err:  # a model that does not load must not stop the others
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        log.error("model %s version %d did not load: %s", name, version, reason)
        return Loaded(Card(name, version, "failed", reason))
    log.info("model %s version %d loaded: %d inputs, %d outputs", name, version, len(card.inputs), len(card.outputs))
    values = {v.name: t.read_value() for v, t in zip(card.variables, signature.trainable_variables, strict=True)}
    return Loaded(card, signature, graph, loaded, Versions(name, version, values, keep))


def _batch_setting(path: Path) -> bool | None:
    """`"batch": false` in config.json beside the versions: examples are not independent."""
    config = path.parent / "config.json"
    if not config.is_file():
        return None
    return bool(json.loads(config.read_text()).get("batch", True))


def _tensor(name: str, spec: tf.TensorSpec) -> Tensor:
    return Tensor(
        name,
        spec.dtype.as_numpy_dtype().dtype.name if spec.dtype != tf.string else "string",
        tuple(spec.shape.as_list()),
    )


def describe(name: str, version: int, signature: Any, batch_setting: bool | None) -> tuple[Card, graphs.Graph]:
    _args, kwargs = signature.structured_input_signature
    inputs = tuple(_tensor(n, s) for n, s in sorted(kwargs.items()))
    outputs = tuple(_tensor(n, s) for n, s in sorted(signature.structured_outputs.items()))
    strings = [t.name for t in inputs + outputs if t.dtype == "string"]
    if strings:
        raise ValueError(f"string tensors cannot be differentiated: {', '.join(strings)}")
    names = variable_names(signature, {t.name for t in inputs})
    variables = tuple(
        Tensor(n, v.dtype.as_numpy_dtype().dtype.name, tuple(v.shape.as_list()))
        for n, v in zip(names, signature.trainable_variables, strict=True)
    )
    leading = all(t.shape[:1] == (None,) for t in inputs + outputs)
    batch = leading if batch_setting is None else batch_setting and leading
    graph = graphs.Graph.of(signature, names)
    card = Card(
        name,
        version,
        "ready",
        None,
        inputs,
        outputs,
        variables,
        batch,
        versions=(version,),
        variables_fixed_by=graph.fixed_by,
    )
    return Card(**{**card.__dict__, "undefined": graphs.probe(card, graph)}), graph


def variable_names(signature: Any, taken: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The trainable variables' names, made unique (`w`, `w_1`, ...) where TensorFlow repeats one
    or an input has it: they name derivatives beside the inputs'."""
    names: list[str] = []
    for v in signature.trainable_variables:
        base = v.name.removesuffix(":0")
        name, k = base, 0
        while name in names or name in taken or name == VARIABLES:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
    return names


def example_inputs(card: Card, batch: int = 2, dtype: str = "") -> dict[str, tf.Tensor]:
    """Inputs of the signature's dtypes (floating ones `dtype`, if given) and shapes, unknown sizes
    made `batch` (a named size other than the batch, 4; a shared input, one for every row): ones,
    which every op takes, and zeros for integer inputs, which index."""
    out = {}
    for t in card.inputs:
        shape = [d if d is not None else 4 if _named_size(card, t, axis) else batch for axis, d in enumerate(t.shape)]
        dt = dtype if dtype and t.floating else t.dtype
        out[t.name] = tf.ones(shape, dt) if t.floating else tf.zeros(shape, dt)
    return out


def _named_size(card: Card, t: Tensor, axis: int) -> bool:
    """A size the card names (A, F) that is not the batch's: every tensor having it agrees on 4."""
    batch_axis = card.batch and t.name not in card.shared and axis == 0
    return bool(t.symbols) and not batch_axis
