"""app/http/handlers.py: every domain exception becomes its status in the one error shape."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_error_bodies_leak_no_versions_or_paths(client: TestClient) -> None:
    version = client.get("/health/ready").json()["tensorflow"]
    for r in (
        client.post("/jacobian", content=b"{", headers={"content-type": "application/json"}),
        client.post("/jacobian", json={"X": [[1e308, 1e308]], "Y": [1e308, 1e308], "dtype": "float64"}),
        client.post("/hvp", content=b"PK\x03\x04zz", headers={"content-type": "application/x-npz"}),
    ):
        assert r.status_code in (400, 422)
        assert version not in r.text and "site-packages" not in r.text and "Traceback" not in r.text
