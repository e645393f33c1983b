"""app/http/handlers.py: every domain exception becomes its status in the one error shape."""

from __future__ import annotations

import inspect

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app import errors
from app.http.handlers import install_handlers


class NewKindOfTooLarge(errors.TooLarge):
    """A subclass the handlers have never heard of."""

    code = "new_kind"


def _raising(exc: Exception) -> TestClient:
    app = FastAPI()
    install_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


def test_a_new_subclass_takes_its_parents_status_not_500() -> None:
    r = _raising(NewKindOfTooLarge("too big, differently")).get("/boom")
    assert r.status_code == 413
    assert r.json() == {"code": "new_kind", "message": "too big, differently", "details": []}


@pytest.mark.parametrize(
    "cls",
    [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.ServiceError)],
)
def test_every_domain_error_has_a_4xx_or_5xx_status_and_its_code(cls: type[errors.ServiceError]) -> None:
    exc = cls("why")
    r = _raising(exc).get("/boom")
    assert r.status_code == cls.status and 400 <= cls.status < 600
    assert r.json()["code"] == cls.code and r.json()["message"] == "why"
    assert ("retry-after" in r.headers) == (exc.retry_after_s is not None)


def test_an_unexpected_error_is_a_500_without_a_traceback() -> None:
    r = _raising(RuntimeError("secret internals")).get("/boom")
    assert r.status_code == 500 and "secret" not in r.text and r.json()["code"] == "internal_error"
