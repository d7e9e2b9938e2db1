"""``GET /``: the demo page, and ``/static``: the files shipped in ``app/static/``.

The page (``index.html``, ``page.css``, ES modules under ``js/``) is plain HTML, CSS and
JavaScript with no build step and no third-party origin: it calls ``/predict``, ``/visualize``
and ``WS /v1/stream`` of the service that served it, and draws the answers itself.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
STATIC_URL = "/static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The demo page (photo and webcam modes)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def install_page(app: FastAPI) -> None:
    """Serve ``GET /`` and mount ``app/static/`` at ``/static``."""
    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
