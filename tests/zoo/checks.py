"""The zoo's checks (examples/zoo.py; tests/zoo/test_small.py and test_images.py run them): a
model's answers through the app against the same computation done locally with `tf.GradientTape`
on the loaded SavedModel (float32 to 1e-4 relative, float64 to 1e-9)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from app.config import Settings
from app.engine.repository import variable_names
from tests.support.clients import REPOSITORY_READY_S, started_client

NPZ = "application/x-npz"
IMAGES = ["mobilenet_export", "mobilenet_saved", "resnet_export", "resnet_saved"]


def serve(root: Path) -> Iterator[TestClient]:
    """The app serving the zoo's folder (a module fixture of each zoo module)."""
    yield from started_client(Settings(model_repository=str(root)), REPOSITORY_READY_S)


class Local:
    """The SavedModel loaded here, differentiated with GradientTape: the oracle."""

    def __init__(self, path: Path) -> None:
        self.keep = tf.saved_model.load(str(path))
        self.f = self.keep.signatures["serving_default"]
        _args, kwargs = self.f.structured_input_signature
        self.specs = dict(sorted(kwargs.items()))
        self.variables = dict(zip(variable_names(self.f, set(self.specs)), self.f.trainable_variables, strict=True))

    def inputs(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        found = {}
        for name, spec in self.specs.items():
            shape = [batch, *spec.shape[1:]]
            if spec.dtype.is_integer:
                found[name] = rng.integers(0, 4, size=shape).astype(spec.dtype.as_numpy_dtype)
            else:
                found[name] = rng.normal(size=shape).astype(spec.dtype.as_numpy_dtype)
        return found

    def floating(self) -> list[str]:
        return [n for n, s in self.specs.items() if s.dtype.is_floating]

    def __call__(self, xs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return dict(self.f(**xs))


def _rows(full: np.ndarray, y_rank: int) -> np.ndarray:
    """A batch model's per-row blocks of a whole Jacobian (B, *y, B, *x) -> (B, *y, *x)."""
    b = full.shape[0]
    moved = np.moveaxis(full, y_rank, 1)  # (B, B, *y[1:], *x[1:])
    return np.stack([moved[i, i] for i in range(b)])


def _post(client: TestClient, name: str, op: str, arrays: dict[str, np.ndarray], **query: Any) -> dict[str, np.ndarray]:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    r = client.post(
        f"/models/{name}/{op}", params=query, content=buf.getvalue(), headers={"content-type": NPZ, "accept": NPZ}
    )
    assert r.status_code == 200, r.text
    return dict(np.load(io.BytesIO(r.content)))


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    # float64 to 1e-9, but linalg's `mixed` passes rfft in float32: float32's precision there
    tol = 1e-9 if want.dtype == np.float64 and "mixed" not in what else 1e-4
    scale = max(float(np.max(np.abs(want))), 1e-30) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)


def _tensors(xs: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {k: tf.constant(v) for k, v in xs.items()}


def _case(root: Path, name: str) -> tuple[Local, dict[str, np.ndarray]]:
    if name == "density" and not (root / name).is_dir():
        pytest.skip("tensorflow_probability does not import here")
    local = Local(root / name / "1")
    return local, local.inputs(np.random.default_rng(7), 1 if name in IMAGES else 3)


def predict_and_jacobian(client: TestClient, root: Path, name: str) -> None:
    local, xs = _case(root, name)
    got = _post(client, name, "predict", {f"inputs/{k}": v for k, v in xs.items()})
    ts = _tensors(xs)
    wanted = {k: v.numpy() for k, v in local(ts).items()}
    for out, want in wanted.items():
        _close(got[f"outputs/{out}"], want, f"{name} {out}")
    got = _post(client, name, "jacobian", {f"inputs/{k}": v for k, v in xs.items()})
    with tf.GradientTape(persistent=True) as tape:
        for w in local.floating():
            tape.watch(ts[w])
        ys = local(ts)
    for out, y in ys.items():
        for w in local.floating():
            # A loop of reverse passes: pfor's rewrite of MobileNetV2's backward pass took 12 s here.
            want = _rows(tape.jacobian(y, ts[w], experimental_use_pfor=False).numpy(), y.shape.rank)
            _close(got[f"jacobian/{out}/{w}"], want, f"{name} d{out}/d{w}")


def vjp_and_policy_gradient(client: TestClient, root: Path, name: str) -> None:
    local, xs = _case(root, name)
    ts = _tensors(xs)
    ys = local(ts)
    rng = np.random.default_rng(11)
    us = {o: rng.normal(size=y.shape).astype(y.dtype.as_numpy_dtype) for o, y in ys.items()}
    body = {f"inputs/{k}": v for k, v in xs.items()} | {f"cotangents/{o}": u for o, u in us.items()}
    wrt = local.floating() + (["variables"] if local.variables else [])
    got = _post(client, name, "vjp", body, wrt=wrt, of=list(us), sum_batch="true")
    sources = {w: ts[w] for w in local.floating()} | local.variables
    with tf.GradientTape() as tape:
        for w in local.floating():
            tape.watch(ts[w])
        out = local(ts)
        total = tf.add_n([tf.reduce_sum(out[o] * us[o]) for o in us])
    grads = tape.gradient(total, sources)
    for w, g in grads.items():
        g = tf.convert_to_tensor(g)  # an Embedding's gradient comes as IndexedSlices
        want = g.numpy().sum(axis=0) if w in xs else g.numpy()  # sum_batch: the inputs' too
        _close(got[f"vjp/{w}"], want, f"{name} vjp {w}")


def jvp_and_hvp(client: TestClient, root: Path, name: str) -> None:
    """Both contracted with a random u per row (a random projection of y's space, which a wrong
    entry would not survive): u·(J·t) against the local (uᵀJ)·t, one reverse pass, and u·(H·t)
    (the HVP: the Jacobian of J·t in x) against the gradient of (uᵀJ)·t by nested local tapes."""
    local, xs = _case(root, name)
    ts = _tensors(xs)
    rng = np.random.default_rng(13)
    w = local.floating()[0]
    t = rng.normal(size=xs[w].shape).astype(xs[w].dtype)
    body = {f"inputs/{k}": v for k, v in xs.items()} | {f"tangents/{w}": t}
    outs = list(local(ts))
    jvp = _post(client, name, "jvp", body, wrt=[w], of=outs)
    hvp = _post(client, name, "hvp", body, wrt=[w], of=outs)
    b = len(t)
    for out in outs:
        with tf.GradientTape() as outer:
            outer.watch(ts[w])
            with tf.GradientTape() as inner:
                inner.watch(ts[w])
                y = local(ts)[out]
                u = rng.normal(size=y.shape).astype(y.dtype.as_numpy_dtype)
                projected = tf.reduce_sum(u * y)
            ut = tf.reduce_sum(inner.gradient(projected, ts[w]) * t, axis=list(range(1, t.ndim)))  # (uᵀJ)·t per row
            total = tf.reduce_sum(ut)
        per_row = tuple(range(1, y.shape.rank))
        _close(np.sum(u * jvp[f"jvp/{out}"].reshape(y.shape), axis=per_row), ut.numpy(), f"{name} u·(J·t) {out}")
        want = outer.gradient(total, ts[w]).numpy()
        H = hvp[f"hvp/{out}/{w}"].reshape(b, -1, *xs[w].shape[1:])  # (B, y per row, *x[1:])
        contracted = np.einsum("by,by...->b...", u.reshape(b, -1), H)
        _close(contracted, want, f"{name} u·H·t {out}")


def image_hessian_refused(client: TestClient, root: Path) -> None:
    _, xs = _case(root, "mobilenet_export")
    buf = io.BytesIO()
    np.savez(buf, **{f"inputs/{k}": v for k, v in xs.items()})
    r = client.post("/models/mobilenet_export/hessian", content=buf.getvalue(), headers={"content-type": NPZ})
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["message"].lower()


def no_gradient_output(client: TestClient, root: Path) -> None:
    """no_gradient: log = logm(I + m/10) has no gradient, cube = m³ (elementwise) does. Its
    derivatives by the closed forms: ∂cube/∂m = 3m² on the diagonal, u·H·t = 6·m·t·u."""
    rng = np.random.default_rng(17)
    m, t, u = (rng.normal(size=(3, 2, 2)) for _ in range(3))
    body = {"inputs/m": m}
    jac = _post(client, "no_gradient", "jacobian", body)
    assert sorted(k for k in jac if k.startswith("jacobian/")) == ["jacobian/cube/m"]
    eye = np.eye(4).reshape(2, 2, 2, 2)
    _close(jac["jacobian/cube/m"], 3 * m[:, :, :, None, None] ** 2 * eye, "d cube / d m")
    vjp = _post(client, "no_gradient", "vjp", body | {"cotangents/cube": u}, of=["cube"])
    _close(vjp["vjp/m"], 3 * m**2 * u, "vjp")
    hvp = _post(client, "no_gradient", "hvp", body | {"tangents/m": t}, of=["cube"])
    _close(np.einsum("bij,bijkl->bkl", u, hvp["hvp/cube/m"]), 6 * m * t * u, "u·H·t")
    r = client.post("/models/no_gradient/jacobian", json={"inputs": {"m": m.tolist()}, "of": ["log"]})
    assert r.status_code == 422 and "MatrixLogarithm" in r.json()["message"], r.text


def hessian(client: TestClient, root: Path, name: str) -> None:
    """Per example, each output's Hessian in the first float input: the local batch Jacobian of
    the batch Jacobian. (An image's is refused by the limits: the test below.)"""
    local, xs = _case(root, name)
    ts = _tensors(xs)
    w = local.floating()[0]
    got = _post(client, name, "hessian", {f"inputs/{k}": v for k, v in xs.items()}, wrt=[w])
    b = len(xs[w])
    for out in local(ts):
        with tf.GradientTape(persistent=True) as outer:
            outer.watch(ts[w])
            with tf.GradientTape(persistent=True) as inner:  # a loop of reverse passes, not pfor's rewrite
                inner.watch(ts[w])
                y = local(ts)[out]
                y = y if y.shape.rank > 1 else y[:, None]
            g = inner.batch_jacobian(y, ts[w], experimental_use_pfor=False)  # pfor's: 8 s for linalg here
        want = outer.batch_jacobian(g, ts[w], experimental_use_pfor=False).numpy()
        _close(got[f"hessian/{out}/{w}"].reshape(b, -1), want.reshape(b, -1), f"{name} hessian {out}")
