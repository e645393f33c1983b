"""The API key: off unless JACOBIAN_API_KEY is set; then the compute endpoints require it."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from app.config import Settings
from app.errors import Unauthorized


def check_api_key(request: Request, settings: Settings) -> None:
    """When an API key is configured, require it as `Authorization: Bearer <key>` or `X-API-Key`."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    auth = request.headers.get("authorization", "")
    given = auth[7:] if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
    # compare_digest: the time taken does not reveal how much of the key matched.
    if not hmac.compare_digest(given.encode(), expected):
        raise Unauthorized("This endpoint needs the API key: send Authorization: Bearer <key> or X-API-Key: <key>")
