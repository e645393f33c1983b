"""`python -m app.openapi`: print the OpenAPI spec the app serves (committed as openapi/openapi.json)."""

import json

from app.main import create_app


def spec_text() -> str:
    return json.dumps(create_app().openapi(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(spec_text(), end="")
