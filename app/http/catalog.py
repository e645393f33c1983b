"""GET /models and /models/{name}: every model this service serves — the registered built-in
models (`app.ops.MODELS`, the seed's `policy` first) and the model repository's, as the engines
loaded them (`app.catalog.Card`, failures with their reasons)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app import ops
from app.catalog import FLOATING
from app.errors import NotReady, UnknownModel
from app.http import runtime
from app.http.openapi import COMPUTE_ERRORS
from app.http.schemas import ModelCard, ModelList

router = APIRouter(tags=["models"])
_ERRORS: dict[int | str, dict[str, Any]] = {k: COMPUTE_ERRORS[k] for k in (404, 405, 503)}
_LIST = (
    "Every model served: the built-in ones first (`policy`, the seed's log_softmax(X·Y), behind /jacobian and "
    "the rest), then each model of the repository (JACOBIAN_MODEL_REPOSITORY) with its version, state (a model "
    "that failed to load says why), signature, differentiable inputs, trainable variables, and the outputs whose "
    "gradient TensorFlow does not define, with the op it names."
)


def _built_in(model: ops.Model) -> dict[str, Any]:
    """A built-in model's card: W (A) = f(X (A×F), Y (F or B×F)), in float32 or float64."""
    dtype = " or ".join(FLOATING[2:])
    return {
        "name": model.name,
        "version": 1,
        "state": "ready",
        "inputs": [
            {"name": "X", "dtype": dtype, "shape": [None, None]},
            {"name": "Y", "dtype": dtype, "shape": [None]},
        ],
        "outputs": [{"name": "W", "dtype": dtype, "shape": [None]}],
        "differentiable": ["X", "Y"],
        "variables": [],
        "batch": False,
        "undefined": {},
    }


def _cards(request: Request) -> list[dict[str, Any]]:
    engines = runtime.runtime(request).engines
    cards = None if engines is None else engines.cards()
    if cards is None:  # no engine has loaded the repository yet
        raise NotReady("The service is still loading its models; retry shortly")
    repository = [{**c, "differentiable": _differentiable(c)} for c in cards]
    return [_built_in(m) for m in ops.MODELS.values()] + repository


def _differentiable(card: dict[str, Any]) -> list[str]:
    return [t["name"] for t in card["inputs"] if t["dtype"] in FLOATING]


@router.get("/models", summary="The models served", description=_LIST, response_model=ModelList, responses=_ERRORS)
async def list_models(request: Request) -> ModelList:
    return ModelList(models=[ModelCard(**c) for c in _cards(request)])


@router.get(
    "/models/{name}",
    summary="One model: its signature and derivatives",
    description="One model's card, as in GET /models; 404 for a name the service does not serve.",
    response_model=ModelCard,
    responses=_ERRORS,
)
async def get_model(request: Request, name: str) -> ModelCard:
    cards = _cards(request)
    for card in cards:
        if card["name"] == name:
            return ModelCard(**card)
    raise UnknownModel(f"Unknown model {name!r}; the models are {', '.join(c['name'] for c in cards)}")
