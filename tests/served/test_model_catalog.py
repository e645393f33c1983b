"""GET /models under `python -m app`: the engine process loads the repository and the HTTP
workers list its cards (carried in the engine's status), broken models with their reasons."""

from __future__ import annotations

from pathlib import Path

import httpx

from examples import build_models
from tests.support import servers


def test_the_engine_processes_models_are_listed_by_the_workers(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    build_models.build(root)
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "saved_model.pb").write_bytes(b"truncated")
    with servers.running(tmp_path, {"JACOBIAN_MODEL_REPOSITORY": str(root), "JACOBIAN_WORKERS": "2"}) as server:
        for _ in range(4):  # whichever worker answers
            listed = httpx.get(server.url + "/models", timeout=30).json()["models"]
            states = {m["name"]: m["state"] for m in listed}
            assert states == {
                "policy": "ready",
                "actions": "ready",
                "broken": "failed",
                "mlp": "ready",
                "pair": "ready",
                "policy_mlp": "ready",
                "wide": "ready",
            }
        mlp = httpx.get(server.url + "/models/mlp", timeout=30).json()
        assert mlp["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 64]}]
        assert [v["shape"] for v in mlp["variables"]] == [[64, 256], [256], [256, 256], [256], [256, 16], [16]]
        assert httpx.get(server.url + "/models/broken", timeout=30).json()["reason"]
