"""`python -m app.http.spec`: the OpenAPI document as committed (`openapi/openapi.json`, `make
openapi`): the app's, before any engine has reported the repository's models."""

from __future__ import annotations

import json

from app.http.app import create_app


def spec_text() -> str:
    return json.dumps(create_app().openapi(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(spec_text(), end="")
