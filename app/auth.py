"""Optional API-key authentication for the model routes.

With ``HEATPOSE_API_KEY`` set, ``/predict``, ``/visualize`` and ``/v1/model`` need either
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; the comparison is constant-time.
Health, readiness and metrics stay open for probes and scrapers.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import APIKeyHeader, HTTPBearer

from app.errors import ApiError

# Declared for the OpenAPI schema ("Authorize" in /docs); checked by hand below so that
# a missing key is our 401 envelope, not FastAPI's 403.
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <key>")


def presented_key(request: Request) -> str | None:
    """The key the client sent (Bearer token first, then ``X-API-Key``), or ``None``."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def check_api_key(expected: str | None, request: Request) -> None:
    """Raise 401 unless ``expected`` is ``None`` or the request carries it."""
    if expected is None:
        return
    got = presented_key(request)
    if got is None or not hmac.compare_digest(got.encode("utf-8"), expected.encode("utf-8")):
        reason = "missing" if got is None else "wrong"
        raise ApiError(
            401,
            "unauthorized",
            f"{reason} API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
