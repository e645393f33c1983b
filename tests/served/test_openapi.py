"""app/http/openapi.py: the committed spec is what the app serves, it documents every operation fully,
and the served app keeps every promise it makes (schemathesis)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.http.spec import spec_text
from tests.support.clients import SEED
from tests.support.servers import LiveServer

ROOT = Path(__file__).parents[2]
SPEC = ROOT / "openapi" / "openapi.json"
COMPUTE = ["/jacobian", "/hessian", "/hvp", "/vjp", "/jvp"]


def test_committed_spec_matches_the_app(client: TestClient) -> None:
    served = client.get("/openapi.json").json()
    assert json.loads(SPEC.read_text()) == served, "run `make openapi` and commit openapi/openapi.json"
    assert SPEC.read_text() == spec_text()


@pytest.mark.parametrize("path", COMPUTE)
def test_compute_operations_are_fully_documented(path: str) -> None:
    op = json.loads(SPEC.read_text())["paths"][path]["post"]
    assert op["summary"] and len(op["description"]) > 40
    body = op["requestBody"]["content"]
    example = body["application/json"]["example"]
    assert example["X"] == SEED["X"] and example["Y"] == SEED["Y"]
    assert "application/x-npz" in body
    for status in ("400", "404", "405", "413", "415", "422", "503"):
        schema = op["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, status
    assert "application/x-npz" in op["responses"]["200"]["content"]
    assert any(p["name"] == "dtype" and p["in"] == "query" for p in op["parameters"])


def test_every_operation_has_summary_and_description() -> None:
    for path, methods in json.loads(SPEC.read_text())["paths"].items():
        for method, op in methods.items():
            assert op.get("summary") and op.get("description"), (method, path)
            assert "404" in op["responses"] and "405" in op["responses"], (method, path)


def test_error_body_schema_is_the_one_shape() -> None:
    schema = json.loads(SPEC.read_text())["components"]["schemas"]["ErrorBody"]
    assert set(schema["properties"]) == {"code", "message", "details"}


def test_schemathesis_all_checks_zero_failures(live_server: LiveServer) -> None:
    st = Path(sys.executable).parent / "st"
    r = subprocess.run(
        [
            str(st),
            "run",
            live_server.url + "/openapi.json",
            "--checks",
            "all",
            "-n",
            "30",
            "--generation-deterministic",
        ],
        cwd=ROOT,  # picks up schemathesis.toml
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-6000:]
    assert "generated" in r.stdout and "passed" in r.stdout
