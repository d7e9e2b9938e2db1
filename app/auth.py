"""Optional API-key authentication for the model routes.

With ``HEATPOSE_API_KEY`` set, ``/predict``, ``/visualize`` and ``/v1/model`` need either
``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (both trimmed of surrounding
whitespace); the comparison is constant-time. Health and readiness stay open for probes;
``/metrics`` too unless ``HEATPOSE_METRICS_PUBLIC=false``. :class:`app.gate.RequestGate` checks
the key before the body is read; the routes' dependency checks it again.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import Scope

from app.errors import ApiError

# Declared for the OpenAPI schema ("Authorize" in /docs); checked by hand below so that
# a missing key is our 401 envelope, not FastAPI's 403.
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <key>")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key the client sent (Bearer token first, then ``X-API-Key``), trimmed, or ``None``."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "").strip() or None


def check_api_key(expected: str | None, request: Request | Scope) -> None:
    """Raise 401 unless ``expected`` is ``None`` or the request (or ASGI scope) carries it."""
    if expected is None:
        return
    headers = request.headers if isinstance(request, Request) else Headers(scope=request)
    got = presented_key(headers)
    if got is None or not hmac.compare_digest(got.encode("utf-8"), expected.encode("utf-8")):
        reason = "missing" if got is None else "wrong"
        raise ApiError(
            401,
            "unauthorized",
            f"{reason} API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
