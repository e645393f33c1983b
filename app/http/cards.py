"""GET /models and /models/{name}: every model this service serves, as the engines loaded them
(`app.catalog.Card`): the built-in `policy` first, then the repository's, failures with their
reasons."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.catalog import FLOATING
from app.errors import NotReady, UnknownModel
from app.http import runtime
from app.http.openapi import COMPUTE_ERRORS
from app.http.schemas import ModelCard, ModelList

router = APIRouter(tags=["models"])
_ERRORS: dict[int | str, dict[str, Any]] = {k: COMPUTE_ERRORS[k] for k in (404, 405, 503)}
_LIST = (
    "Every model served: the built-in one first (`policy`, the seed's log_softmax(X·Y), also behind /jacobian "
    "and the rest), then each model of the repository (JACOBIAN_MODEL_REPOSITORY) with its version, state (a model "
    "that failed to load says why), signature, differentiable inputs, trainable variables, and the outputs whose "
    "gradient TensorFlow does not define, with the op it names."
)


def _cards(request: Request) -> list[dict[str, Any]]:
    engines = runtime.runtime(request).engines
    cards = None if engines is None else engines.cards()
    if cards is None:  # no engine has loaded the repository yet
        raise NotReady("The service is still loading its models; retry shortly")
    return [{**c, "differentiable": _differentiable(c), "versions": _versions(c)} for c in cards]


def _versions(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"version": v, "state": "available"} for v in card.get("versions", [])]


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
