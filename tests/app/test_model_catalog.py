"""GET /models and /models/{name} through the app, with JACOBIAN_MODEL_REPOSITORY set to the
tier's test repository (tests/app/conftest.py): the built-in `policy` first, each repository model
with its signature, variables and state; a broken one listed with its reason beside the others;
an unknown name a 404 in the error shape. Without a repository, `policy` alone."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient


def test_every_model_is_listed_with_its_signature(repo_client: TestClient, repo: Path) -> None:
    r = repo_client.get("/models")
    assert r.status_code == 200, r.text
    models = {m["name"]: m for m in r.json()["models"]}
    names = [m["name"] for m in r.json()["models"]]
    assert names[0] == "policy"
    assert sorted(names[1:]) == sorted(p.name for p in repo.iterdir())
    assert {"actions", "broken", "mlp", "pair", "policy", "policy_mlp", "wide"} <= set(names)
    policy = repo_client.get("/models/policy").json()
    assert policy["inputs"][0]["name"] == "X" and policy["differentiable"] == ["X", "Y"]
    actions = models["actions"]
    assert actions["state"] == "ready" and actions["batch"] is True
    assert actions["inputs"] == [
        {"name": "action", "dtype": "int32", "shape": [None], "symbols": []},
        {"name": "state", "dtype": "float32", "shape": [None, 4], "symbols": []},
    ]
    assert actions["differentiable"] == ["state"]
    assert actions["outputs"] == [{"name": "log_prob", "dtype": "float32", "shape": [None], "symbols": []}]
    assert {v["name"] for v in actions["variables"]} == {"dense/w0", "dense/b0", "dense/w1", "dense/b1"}
    assert {"name": "dense/w1", "dtype": "float32", "shape": [16, 3], "symbols": []} in actions["variables"]
    assert models["wide"]["outputs"] == [{"name": "y", "dtype": "float64", "shape": [None, 2], "symbols": []}]


def test_a_broken_model_is_listed_with_its_reason_and_the_others_serve(repo_client: TestClient) -> None:
    broken = repo_client.get("/models/broken")
    assert broken.status_code == 200
    body = broken.json()
    assert body["state"] == "failed" and body["version"] == 3 and body["reason"] and body["inputs"] == []
    assert repo_client.get("/models/mlp").json()["state"] == "ready"


def test_a_repository_model_cannot_take_a_built_in_models_name(repo_client: TestClient) -> None:
    listed = [m for m in repo_client.get("/models").json()["models"] if m["name"] == "policy"]
    assert len(listed) == 2 and listed[0]["inputs"][0]["name"] == "X"  # the built-in one first
    assert listed[1]["state"] == "failed" and "a built-in model's name" in listed[1]["reason"]
    assert repo_client.get("/models/policy").json()["inputs"][0]["name"] == "X"


def test_an_unknown_model_is_a_404_naming_the_models(repo_client: TestClient) -> None:
    r = repo_client.get("/models/nope")
    assert r.status_code == 404
    assert r.json()["code"] == "unknown_model" and "the models are policy, " in r.json()["message"]


def test_without_a_repository_the_built_in_model_alone(client: TestClient) -> None:
    assert [m["name"] for m in client.get("/models").json()["models"]] == ["policy"]
