"""app/http/auth.py: the API key, when one is configured."""

from __future__ import annotations

import pytest

from app.config import Settings
from tests.support.clients import SEED, started_client


def test_api_key_when_configured() -> None:
    for client in started_client(Settings(api_key="s3cret-key")):
        assert client.post("/jacobian", json=SEED).status_code == 401
        wrong = client.post("/jacobian", json=SEED, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert "s3cret" not in wrong.text
        assert client.post("/jacobian", json=SEED, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert (
            client.post("/hvp", json={**SEED, "V": SEED["X"]}, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        )
        assert client.post("/hessian", json=SEED, headers={"X-API-Key": "s3cret-ke"}).status_code == 401
        assert client.get("/health/ready").status_code == 200 and client.get("/health/live").status_code == 200
        # The Open Inference Protocol's infer needs the same key; its metadata and health do not.
        v2 = {
            "inputs": [
                {"name": "X", "shape": [2, 4], "datatype": "FP64", "data": SEED["X"]},
                {"name": "Y", "shape": [4], "datatype": "FP64", "data": SEED["Y"]},
            ]
        }
        refused = client.post("/v2/models/jacobian/infer", json=v2)
        assert refused.status_code == 401 and "API key" in refused.json()["error"]
        keyed = client.post("/v2/models/jacobian/infer", json=v2, headers={"Authorization": "Bearer s3cret-key"})
        assert keyed.status_code == 200 and client.get("/v2/models/jacobian").status_code == 200


def test_empty_api_key_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JACOBIAN_API_KEY", "")
    assert Settings().api_key is None
