"""The demo page and the offline docs without a browser: what is served, what is shipped, and
the API-key security schemes in the OpenAPI schema."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STATIC = ROOT / "app" / "static"


def page_files() -> list[Path]:
    return sorted(p for p in STATIC.rglob("*") if p.is_file())


def test_package_data_ships_every_static_file() -> None:
    """A non-editable ``pip install .`` must carry the page and the docs assets: every file
    under app/static matches a ``[tool.setuptools.package-data]`` pattern of ``app``."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app"]
    shipped = {p for pattern in patterns for p in (ROOT / "app").glob(pattern) if p.is_file()}
    missing = [str(p.relative_to(ROOT)) for p in page_files() if p not in shipped]
    assert not missing, f"not in package-data: {missing}"
    assert (STATIC / "index.html") in shipped and (STATIC / "js" / "main.js") in shipped


def test_vendored_assets_match_their_recorded_hashes_and_keep_their_licences() -> None:
    readme = (STATIC / "vendor" / "README.md").read_text()
    recorded = re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, flags=re.M)
    assert len(recorded) == 3
    for digest, rel in recorded:
        assert hashlib.sha256((STATIC / "vendor" / rel).read_bytes()).hexdigest() == digest, rel
    assert "Apache License" in (STATIC / "vendor" / "swagger-ui" / "LICENSE").read_text()
    assert "MIT" in (STATIC / "vendor" / "redoc" / "LICENSE").read_text()


def test_page_sources_name_no_other_origin() -> None:
    """The page's own HTML, CSS and JS load nothing from another host (no CDN, no fonts)."""
    own = [p for p in page_files() if "vendor" not in p.parts and p.suffix != ".svg"]
    assert own
    for p in own:
        text = p.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), p
        assert "@import" not in text and "fonts." not in text, p


@pytest.mark.anyio
async def test_index_docs_and_assets_are_served(serve_app) -> None:
    async with serve_app() as (client, _):
        r = await client.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        refs = re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text)
        js = (STATIC / "js" / "main.js").read_text()
        refs += [f"/static/js/{m}" for m in re.findall(r'from "\./([a-z]+\.js)"', js)]
        for ref in refs:
            assert (await client.get(ref)).status_code == 200, ref
        for path, asset in [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]:
            html = (await client.get(path)).text
            urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
            assert any(u.endswith(asset) for u in urls), urls
            assert all(u.startswith("/") for u in urls), urls  # nothing from another origin
            for u in urls:
                assert (await client.get(u)).status_code == 200, u
        assert "fonts.googleapis" not in (await client.get("/redoc")).text


@pytest.mark.anyio
async def test_openapi_declares_both_key_schemes_on_the_key_protected_routes(serve_app) -> None:
    async with serve_app(api_key="s3cret-key-123") as (client, _):
        schema = (await client.get("/openapi.json")).json()
        schemes = schema["components"]["securitySchemes"]
        assert schemes["APIKeyHeader"] == {
            **schemes["APIKeyHeader"],
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
        }
        assert schemes["HTTPBearer"]["type"] == "http"
        assert schemes["HTTPBearer"]["scheme"] == "bearer"
        paths = schema["paths"]
        protected = {"/predict": "post", "/visualize": "post", "/v1/model": "get"}
        for path, method in protected.items():
            security = paths[path][method]["security"]
            assert {"APIKeyHeader": []} in security and {"HTTPBearer": []} in security
        for path in ["/health", "/ready", "/metrics"]:
            assert "security" not in paths[path]["get"], path
        # What the schemes promise is what the service accepts (app.http.auth): both ways work.
        assert (await client.get("/v1/model")).status_code == 401
        key = "s3cret-key-123"
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            assert (await client.get("/v1/model", headers=headers)).status_code == 200
        assert "/" not in paths and "/docs" not in paths


@pytest.mark.anyio
async def test_openapi_declares_no_security_without_a_key(serve_app) -> None:
    """Issue 23 §3: schemathesis read the key scheme on /v1/model as a promise of a 401 that a
    service without HEATPOSE_API_KEY never gives."""
    async with serve_app() as (client, _):
        schema = (await client.get("/openapi.json")).json()
        assert "securitySchemes" not in schema.get("components", {})
        for path, item in schema["paths"].items():
            for method, operation in item.items():
                assert "security" not in operation, (path, method)
                assert "401" not in operation.get("responses", {}), (path, method)
        assert (await client.get("/v1/model")).status_code == 200  # indeed open
