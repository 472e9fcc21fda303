"""Two separate API keys: one for predictions, one for operators. Constant-time comparison.

No credential is a 401; a credential that is not the one this route needs is a 403. These run
as router dependencies, before any route reads its body: routes never declare body parameters
(FastAPI would read and parse those before the dependencies run).
"""

from __future__ import annotations

import hmac

from fastapi import Request
from pydantic import SecretStr

from service.api.deps import settings_of
from service.errors import Forbidden, Unauthorized


def key_of(authorization: str | None, x_api_key: str | None) -> str | None:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (HTTP headers or gRPC metadata)."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return x_api_key


def presented_key(request: Request) -> str | None:
    return key_of(request.headers.get("authorization"), request.headers.get("x-api-key"))


def check_presented(key: str | None, expected: SecretStr, role: str) -> None:
    """Unauthorized without a key, Forbidden with another one."""
    if not key:
        raise Unauthorized(f"this route needs the {role} API key (Authorization: Bearer <key>)")
    if not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise Forbidden(f"the presented key is not the {role} API key")


def check_key(request: Request, expected: SecretStr, role: str) -> None:
    check_presented(presented_key(request), expected, role)


# Async on purpose: FastAPI runs sync dependencies in a thread pool, a ~0.1 ms round trip.
async def require_predict(request: Request) -> None:
    check_key(request, settings_of(request.app).predict_api_key, "prediction")


async def require_admin(request: Request) -> None:
    check_key(request, settings_of(request.app).admin_api_key, "operator")


async def require_feedback(request: Request) -> None:
    """The admin key, or the separate feedback key so a labelling job needs no operator rights."""
    settings = settings_of(request.app)
    key = presented_key(request)
    feedback_key = settings.feedback_api_key
    if (
        key
        and feedback_key is not None
        and hmac.compare_digest(key.encode(), feedback_key.get_secret_value().encode())
    ):
        return
    check_key(request, settings.admin_api_key, "feedback or operator")
