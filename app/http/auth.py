"""Optional API-key authentication for the model routes.

With ``HEATPOSE_API_KEY`` set, ``/predict``, ``/visualize`` and ``/v1/model`` need either
``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (both trimmed of surrounding
whitespace); the comparison is constant-time. Health and readiness stay open for probes;
``/metrics`` too unless ``HEATPOSE_METRICS_PUBLIC=false``. :class:`app.http.gate.RequestGate` checks
the key before the body is read; the routes' dependency checks it again.

``WS /v1/stream`` also takes the key in the ``Sec-WebSocket-Protocol`` header, the one header a
browser's ``new WebSocket(url, protocols)`` can set: the client offers :data:`STREAM_PROTOCOL`
and ``heatpose.key.<base64url of the key>`` (:func:`key_subprotocol`); the server selects
:data:`STREAM_PROTOCOL` and never echoes the key. The key stays out of the URL, and so out of
access logs (:mod:`app.observability.redaction` redacts the old ``?api_key=`` too).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping

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


STREAM_PROTOCOL = "heatpose"
"""The subprotocol ``WS /v1/stream`` selects when the client offers it."""
KEY_PROTOCOL_PREFIX = "heatpose.key."


def key_subprotocol(key: str) -> str:
    """The subprotocol carrying ``key``: ``heatpose.key.`` + base64url (UTF-8, no padding),
    which keeps to the characters a ``Sec-WebSocket-Protocol`` token may hold."""
    encoded = base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii").rstrip("=")
    return KEY_PROTOCOL_PREFIX + encoded


def key_from_subprotocols(offered: Iterable[str]) -> str | None:
    """The key a client offered as :func:`key_subprotocol`, or ``None`` (none, or undecodable)."""
    for protocol in offered:
        if protocol.startswith(KEY_PROTOCOL_PREFIX):
            encoded = protocol.removeprefix(KEY_PROTOCOL_PREFIX)
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                return raw.decode("utf-8").strip() or None
            except (binascii.Error, ValueError):
                return None
    return None


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
