"""The error every layer of the service raises for its client: :class:`ApiError` (status, code,
message, headers). :mod:`app.http.errors` turns it into the JSON envelope and maps the core's
domain exceptions to it."""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    """An error answer: HTTP ``status``, a stable ``code``, a ``message`` and extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
