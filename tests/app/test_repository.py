"""app/engine/repository.py: the example repository (examples/build_models.py) loads with the
cards its signatures say, its forward passes equal a NumPy re-implementation from the SavedModels'
variables, broken models are cards with their reasons beside the served ones, the highest version
is served, and the gradient probe names the op without a gradient (tf.linalg.logm) while a
tf.round path counts as defined (zeros)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from app import calls
from app.catalog import VARIABLES, Tensor
from app.engine import kernels, repository
from examples import build_models
from tests.support import edge_models


def _save(root: Path, name: str, fn: tf.types.experimental.GenericFunction, module: tf.Module | None = None) -> None:
    tf.saved_model.save(module or tf.Module(), str(root / name / "1"), signatures={"serving_default": fn})


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    build_models.build(root)
    edge_models.save_logm(root)
    edge_models.save_rounded(root)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def strings(text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"n": tf.strings.length(text)}

    _save(root, "strings", strings)
    tf.saved_model.save(tf.Module(), str(root / "unsigned" / "1"))  # no signatures at all
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    good = (root / "wide" / "1" / "saved_model.pb").read_bytes()
    (broken / "saved_model.pb").write_bytes(good[: len(good) // 3])  # truncated
    # Two versions: the higher is served; config.json says examples are not independent.
    build_models.wide(root / "versions" / "tmp", np.random.default_rng(1))
    (root / "versions" / "tmp" / "wide" / "1").rename(root / "versions" / "7")
    build_models.wide(root / "versions" / "tmp", np.random.default_rng(2))
    (root / "versions" / "tmp" / "wide" / "1").rename(root / "versions" / "12")
    (root / "versions" / "config.json").write_text('{"batch": false}')
    return root


@pytest.fixture(scope="module")
def loaded(repo: Path) -> dict[str, repository.Loaded]:
    return repository.load_repository(repo)


def test_the_example_models_load_with_their_signatures(loaded: dict[str, repository.Loaded]) -> None:
    policy = loaded["policy_mlp"].card
    assert policy.state == "ready" and policy.version == 1 and policy.batch
    assert policy.inputs == (Tensor("state", "float32", (None, 8)),)
    assert policy.outputs == (Tensor("log_probs", "float32", (None, 4)), Tensor("value", "float32", (None, 1)))
    assert len(policy.variables) == 8 and not policy.undefined  # two body layers, two heads
    names = [v.name for v in policy.variables]
    assert len(set(names)) == 8 and "body/w0" in names and Tensor("value/b0", "float32", (1,)) in policy.variables
    actions = loaded["actions"].card
    assert actions.inputs == (Tensor("action", "int32", (None,)), Tensor("state", "float32", (None, 4)))
    assert actions.differentiable == ("state",)
    assert loaded["wide"].card.outputs == (Tensor("y", "float64", (None, 2)),)
    pair = loaded["pair"].card
    assert [t.name for t in pair.inputs] == ["a", "b"] and [t.name for t in pair.outputs] == ["d", "s"]


def test_forward_passes_equal_numpy_from_the_saved_variables(
    loaded: dict[str, repository.Loaded], rng: np.random.Generator
) -> None:
    wide = loaded["wide"]
    w0, b0, w1, b1 = (v.numpy() for v in wide.signature.trainable_variables)
    x = rng.normal(size=(3, 5))
    y = wide.signature(x=tf.constant(x))["y"].numpy()
    np.testing.assert_allclose(y, np.tanh(x @ w0 + b0) @ w1 + b1, rtol=1e-12)
    pair = loaded["pair"]
    (scale,) = (v.numpy() for v in pair.signature.trainable_variables)
    a, b = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)
    out = pair.signature(a=tf.constant(a), b=tf.constant(b))
    np.testing.assert_allclose(out["s"].numpy(), a * b * scale + np.sin(a), rtol=1e-5)
    np.testing.assert_allclose(out["d"].numpy(), a - np.tanh(b), rtol=1e-5)


def test_broken_models_are_cards_with_their_reasons(loaded: dict[str, repository.Loaded]) -> None:
    reasons = {n: loaded[n].card.reason or "" for n in ("broken", "strings", "unsigned")}
    assert all(loaded[n].card.state == "failed" and loaded[n].signature is None for n in reasons)
    assert "string tensors cannot be differentiated: text" in reasons["strings"]
    assert "no 'serving_default' signature" in reasons["unsigned"]
    assert reasons["broken"]  # TensorFlow's own words for a truncated graph
    assert loaded["policy_mlp"].card.state == "ready"  # the others serve


def test_the_highest_version_is_served_and_config_can_turn_batching_off(
    loaded: dict[str, repository.Loaded], repo: Path
) -> None:
    card = loaded["versions"].card
    assert card.state == "ready" and card.version == 12 and not card.batch
    v12 = tf.saved_model.load(str(repo / "versions" / "12"))  # kept: its signature needs it alive
    got = [v.numpy() for v in loaded["versions"].signature.trainable_variables]
    for mine, theirs in zip(got, v12.signatures["serving_default"].trainable_variables, strict=True):
        np.testing.assert_array_equal(mine, theirs.numpy())


def test_a_repository_that_is_not_there_serves_nothing_and_stops_nothing(tmp_path: Path) -> None:
    assert repository.load_repository(tmp_path / "missing") == {}


def test_the_probe_names_the_op_without_a_gradient_and_counts_round_as_zero(
    loaded: dict[str, repository.Loaded],
) -> None:
    logm = loaded["logm"].card
    assert logm.state == "ready"
    assert logm.undefined["log"] == {"m": "MatrixLogarithm"} and not logm.gradient_defined("log", "m")
    # `twice` does not pass through logm: its gradient is defined (each output's own path).
    rounded = loaded["rounded"].card
    assert rounded.undefined == {} and rounded.gradient_defined("r", "x")
    assert loaded["policy_mlp"].card.gradient_defined("value", VARIABLES)


def test_start_up_computes_nothing_a_requests_limits_would_refuse(tmp_path: Path) -> None:
    """`wide` (B, 5) -> (B, 2): one example's Hessian is 2·5·5 = 50 numbers, its Jacobian 10. Under
    an output limit of 40 the Hessian is neither traced nor run at start-up, and the others are
    calibrated on as many rows as the limit admits; under a budget that fits two rows, two. Nothing
    is traced until an operation's first use, which calibrates it."""
    from app.engine import calibration
    from app.engine.derivatives import Engine

    build_models.wide(tmp_path, np.random.default_rng(0))
    engine = Engine(model_repository=str(tmp_path), max_output_elements=40)
    card = engine.repository["wide"].card
    budget = engine.model_calls.memory_budget

    def rows(op: str, limit: int = 40, budget: int = budget) -> int:
        return calibration.rows_for(card, calls.example_call(card, op), limit, budget)

    # per row: predict 2; jacobian 2 + 10; vjp 2 + 5; jvp 2 + 2; hessian 2 + 50; hvp 2 + 10
    assert {op: rows(op) for op in calls.OPERATIONS} == {
        "predict": 16, "jacobian": 2, "vjp": 4, "jvp": 8, "hessian": 0, "hvp": 2,
    }  # fmt: skip
    assert not engine.model_calls.functions and engine.trace_count == 0  # loading traced nothing
    for op in calls.OPERATIONS:
        engine.calibrate("wide", op)
    assert set(engine.repository["wide"].card.peak_factors) == {"predict", "jacobian", "vjp", "jvp", "hvp"}
    assert not [k for k in engine.model_calls.functions if k[0] == "wide" and k[1] == calls.HESSIAN]  # never traced
    assert rows(calls.HESSIAN, limit=2**26) == calibration.ROWS
    two_rows = calibration.HEADROOM * 2 * 8 * (5 + 2 + 50)  # float64: x, and y with its Hessian
    assert rows(calls.HESSIAN, limit=2**26, budget=two_rows) == 2


def test_a_gradient_in_every_variable_is_one_reverse_pass(tmp_path: Path) -> None:
    """The policy gradient in all of a model's variables costs one backward pass, as a local tape's
    does, not one per variable: its graph is about the size of the gradient in the input alone
    (MobileNetV2's once had 2,738 Conv2DBackpropFilter ops for its 52 convolutions)."""
    from app.engine.derivatives import Engine

    build_models.build(tmp_path)
    engine = Engine(model_repository=str(tmp_path))
    card = engine.repository["mlp"].card  # 64 -> 256 -> 256 -> 16: six variables
    assert len(card.variables) == 6

    def nodes(wrt: str) -> int:
        call = calls.Call(calls.VJP, (wrt,), ("y",), sum_batch=True, stack=True, single=True)
        return len(engine.call_function("mlp", call).concrete.graph.as_graph_def().node)

    assert nodes(VARIABLES) < 1.5 * nodes("x"), (nodes(VARIABLES), nodes("x"))


@pytest.mark.parametrize("op", [calls.JACOBIAN, calls.VJP])
def test_the_flat_call_names_each_output_as_the_public_call_does(repo: Path, op: str) -> None:
    """The engine calls TensorFlow's private flat entry (`app.engine.tensors.flat_caller`) and names
    the flat outputs where TensorFlow's own packing puts them, in the function's own order (the
    order an answer's arrays are sent in): in every variable of the mlp, both calls agree."""
    from app.engine.derivatives import Engine

    engine = Engine(model_repository=str(repo))
    call = calls.Call(op, (VARIABLES,), ("y",), sum_batch=op == calls.VJP, single=op == calls.VJP)
    fast = engine.call_function("mlp", call)
    assert hasattr(fast, "concrete"), "the flat entry is gone: the engine fell back to the public call"
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=(3, 64)).astype(np.float32)]
    if op == calls.VJP:
        rows.append(rng.normal(size=(3, 1, 16)).astype(np.float32))
    loaded = engine.repository["mlp"]
    assert loaded.versions is not None and loaded.graph is not None
    values = [loaded.versions.newest.values[v.name] for v in kernels.valued(loaded.card, loaded.graph)]
    assert len(values) == 6  # the variables are the function's arguments, after the rows
    got, want = fast(*rows, *values), fast.concrete(*rows, *values)
    assert list(got) == list(want) and len(got) == 7
    for name, tensor in want.items():
        np.testing.assert_array_equal(got[name].numpy(), tensor.numpy(), err_msg=name)
