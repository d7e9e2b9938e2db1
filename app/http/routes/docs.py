"""``/docs`` (Swagger UI) and ``/redoc`` from files shipped in the package, and the API-key
security schemes in the OpenAPI schema.

FastAPI's own doc pages load Swagger UI, ReDoc, a favicon and Google Fonts from CDNs, so they
render nothing offline. Here the same pages load ``app/static/vendor/`` (Swagger UI and ReDoc,
vendored from npm with their licences; see ``app/static/vendor/README.md``) from the service's own
origin. With ``HEATPOSE_API_KEY`` set, the schema declares the two ways :mod:`app.http.auth`
accepts a key (``X-API-Key`` and ``Authorization: Bearer``), and every operation that
documents a 401 answer requires one of them, so Swagger UI's "Authorize" button sends the key
with "Try it out".
Without a key the schema declares no security and no 401 answers: none can happen (schema-driven
testers such as schemathesis take a declared scheme as a promise to refuse requests without it).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

from app.http.routes.page import STATIC_URL

VENDOR = f"{STATIC_URL}/vendor"
FAVICON = f"{STATIC_URL}/favicon.svg"

# Names are those FastAPI gives the schemes of app.http.auth (APIKeyHeader, HTTPBearer).
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "APIKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "X-API-Key: <key> (when the service has HEATPOSE_API_KEY set)",
    },
    "HTTPBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <key> (the same key)",
    },
}
# Either scheme is enough: a list of alternatives.
KEY_REQUIRED: list[dict[str, list[str]]] = [{"APIKeyHeader": []}, {"HTTPBearer": []}]


def openapi_with_security(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI schema (built once); with an API key configured
    (``app.state.settings.api_key``) the key schemes are declared and required on every
    operation that can answer 401, without one no operation documents a 401."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        settings = getattr(app.state, "settings", None)
        keyed = settings is not None and settings.api_key is not None
        if keyed:
            components = schema.setdefault("components", {})
            components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict) and "401" in operation.get("responses", {}):
                    if keyed:
                        operation["security"] = KEY_REQUIRED
                    else:
                        del operation["responses"]["401"]
        app.openapi_schema = schema
    return app.openapi_schema


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs``, its OAuth2 redirect page and ``/redoc`` from vendored assets; replace
    ``app.openapi`` by :func:`openapi_with_security`. Create ``app`` with ``docs_url=None,
    redoc_url=None`` (FastAPI's CDN pages) and call :func:`app.http.routes.page.install_page` too
    (it serves the static files)."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=FAVICON,
            oauth2_redirect_url=redirect_url,
            # No validator badge: it would call validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
            redoc_favicon_url=FAVICON,
            with_google_fonts=False,
        )

    def custom_openapi() -> dict[str, Any]:
        return openapi_with_security(app)

    app.openapi = custom_openapi  # type: ignore[method-assign]
