"""Every class of bad input gets a clear 4xx in the one error shape — on every compute
endpoint — and the service keeps serving."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.support.clients import SEED
from tests.support.helpers import NPZ, npz_bytes

ENDPOINTS = {"/jacobian": {}, "/hessian": {}, "/hvp": {"V": [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]}}


def valid(path: str) -> dict[str, Any]:
    return {**SEED, **ENDPOINTS[path]}


def with_(path: str, **changes: Any) -> bytes:
    return json.dumps({**valid(path), **changes}).encode()


# name -> (body builder, expected status, a phrase the message must contain)
BAD_JSON = {
    "malformed": (lambda p: b'{"X": [[1, 2]', 400, "not valid JSON"),
    "empty body": (lambda p: b"", 400, "empty"),
    "whitespace body": (lambda p: b"   \n", 400, "empty"),
    "top-level array": (lambda p: b"[1, 2, 3]", 422, "object"),
    "top-level number": (lambda p: b"42", 422, "object"),
    "missing X": (lambda p: json.dumps({k: v for k, v in valid(p).items() if k != "X"}).encode(), 422, "X"),
    "missing Y": (lambda p: json.dumps({k: v for k, v in valid(p).items() if k != "Y"}).encode(), 422, "Y"),
    "unknown field": (lambda p: with_(p, colour="red"), 422, "colour"),
    "ragged X": (lambda p: with_(p, X=[[1, 2, 3, 4], [1, 2]]), 422, "ragged"),
    "ragged Y batch": (lambda p: with_(p, Y=[[1, 2, 3, 4], [1]]), 422, "ragged"),
    "X is 1-D": (lambda p: with_(p, X=[1, 2, 3, 4]), 422, "X"),
    "X is 3-D": (lambda p: with_(p, X=[[[1, 2, 3, 4]]]), 422, "X"),
    "Y is 3-D": (lambda p: with_(p, Y=[[[1, 2, 3, 4]]]), 422, "Y"),
    "Y is a number": (lambda p: with_(p, Y=3), 422, "Y"),
    "empty X": (lambda p: with_(p, X=[]), 422, "X"),
    "empty row": (lambda p: with_(p, X=[[], []]), 422, "X"),
    "empty Y": (lambda p: with_(p, Y=[]), 422, "Y"),
    "empty Y batch row": (lambda p: with_(p, Y=[[]]), 422, "Y"),
    "len(Y) != F": (lambda p: with_(p, Y=[1, 2, 3]), 422, "one entry per column"),
    "Y columns != F": (lambda p: with_(p, Y=[[1, 2, 3], [4, 5, 6]]), 422, "one entry per column"),
    "string number": (lambda p: with_(p, Y=["1", 2, 3, 4]), 422, "number"),
    "null": (lambda p: with_(p, Y=[None, 2, 3, 4]), 422, "number"),
    "boolean": (lambda p: with_(p, X=[[True, 0, 0, 0], [0, 0, 0, 0]]), 422, "number"),
    "NaN token": (lambda p: with_(p).replace(b"0.1", b"NaN"), 422, "finite"),
    "Infinity token": (lambda p: with_(p).replace(b"0.1", b"Infinity"), 422, "finite"),
    "-Infinity token": (lambda p: with_(p).replace(b"0.1", b"-Infinity"), 422, "finite"),
    "overflowing literal": (lambda p: with_(p).replace(b"0.1", b"1e400"), 422, "finite"),
    "float32 overflow": (lambda p: with_(p, X=[[1e39, 0, 0, 0], [0, 0, 0, 0]]), 422, "float64"),
    "unsupported dtype": (lambda p: with_(p, dtype="float16"), 422, "float32"),
    "dtype not a string": (lambda p: with_(p, dtype=64), 422, "dtype"),
    "deep nesting": (lambda p: b"[" * 100_000, 400, "recursion"),
    "deep nesting in X": (lambda p: b'{"X": ' + b"[" * 100_000, 400, "recursion"),
    "result overflows": (
        lambda p: with_(p, X=[[1e300, 1e300, 0, 0], [0, 0, 0, 0]], Y=[1e300, 1e300, 0, 0], dtype="float64"),
        422,
        "not finite",
    ),
}


def post_raw(client: TestClient, path: str, body: bytes) -> Any:
    return client.post(path, content=body, headers={"content-type": "application/json"})


def assert_error(r: Any, status: int, phrase: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message", "details"}
    assert phrase.lower() in (body["message"] + json.dumps(body["details"])).lower(), body
    assert "Traceback" not in r.text and ".py" not in r.text


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("case", BAD_JSON)
def test_bad_json_gets_a_clear_4xx(client: TestClient, path: str, case: str) -> None:
    build, status, phrase = BAD_JSON[case]
    r = post_raw(client, path, build(path))
    assert_error(r, status, phrase)
    assert client.post(path, json=valid(path)).status_code == 200  # still serving


@pytest.mark.parametrize("path", ENDPOINTS)
def test_bad_wrt_or_v(client: TestClient, path: str) -> None:
    if path == "/jacobian":
        assert_error(post_raw(client, path, with_(path, wrt=["Z"])), 422, "wrt")
        assert_error(post_raw(client, path, with_(path, wrt=[])), 422, "wrt")
    elif path == "/hvp":
        assert_error(post_raw(client, path, with_(path, V=[[1, 2]])), 422, "shaped like X")
        assert_error(post_raw(client, path, with_(path, V=[[1, 0, 0, 0], [0, 0, 0, 1e999]])), 422, "finite")
        missing = {k: v for k, v in valid(path).items() if k != "V"}
        assert_error(client.post(path, json=missing), 422, "V")
    else:
        assert_error(post_raw(client, path, with_(path, V=[[1.0]])), 422, "V")


def npz_cases(path: str) -> dict[str, tuple[bytes, int, str]]:
    X, y = np.array(SEED["X"]), np.array(SEED["Y"])
    extra = {"V": np.ones_like(X)} if path == "/hvp" else {}
    return {
        "not a zip": (b"PK\x03\x04garbage", 400, "npz"),
        "a plain .npy": (b"\x93NUMPY\x01\x00" + b"x" * 40, 400, "npz"),
        "empty": (b"", 400, "empty"),
        "missing Y": (npz_bytes(X=X, **extra), 422, "missing"),
        "extra member": (npz_bytes(X=X, Y=y, Z=y, **extra), 422, "unexpected"),
        "integer arrays": (npz_bytes(X=X.astype(int), Y=y.astype(int), **extra), 422, "float32 or float64"),
        "object arrays": (
            npz_bytes(X=np.array([None, 1], dtype=object), Y=y, **extra),
            400,
            "not a readable",
        ),
        "NaN": (npz_bytes(X=np.where(X > 0.7, np.nan, X), Y=y, **extra), 422, "finite"),
        "wrong rank": (npz_bytes(X=X[None], Y=y, **extra), 422, "2-D"),
        "wrong F": (npz_bytes(X=X, Y=y[:3], **extra), 422, "one entry per column"),
    }


@pytest.mark.parametrize("path", ENDPOINTS)
def test_bad_npz_gets_a_clear_4xx(client: TestClient, path: str) -> None:
    for name, (body, status, phrase) in npz_cases(path).items():
        r = client.post(path, content=body, headers={"content-type": NPZ})
        assert r.status_code == status, (name, r.text)
        assert_error(r, status, phrase)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""])
def test_unsupported_content_type_is_415(client: TestClient, path: str, content_type: str) -> None:
    r = client.post(path, content=json.dumps(valid(path)), headers={"content-type": content_type})
    assert_error(r, 415, "application/json")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405(client: TestClient, method: str) -> None:
    r = client.request(method, "/jacobian")
    assert_error(r, 405, "not allowed")
    assert "POST" in r.headers["allow"]


def test_unknown_path_is_404(client: TestClient) -> None:
    assert_error(client.post("/jacobians", json=SEED), 404, "/jacobians")


def test_bad_dtype_query_is_422(client: TestClient) -> None:
    assert_error(client.post("/jacobian?dtype=int8", json=SEED), 422, "dtype")
