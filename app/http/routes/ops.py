"""Operations: ``/health``, ``/ready``, ``/metrics`` (open) and ``/v1/model`` (API key)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.engine.failures import NotServing
from app.http.deps import ServiceDep, require_api_key
from app.http.errors import error_responses
from app.http.schemas import Health, ModelMetadata, Ready

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    response_model=Health,
    response_model_exclude_none=True,
    summary="The process is alive",
)
async def health(service: ServiceDep) -> Health:
    """Always ``{"status": "ok"}`` while the process answers; ``details`` says what runs
    degraded (``detector``: why ``HEATPOSE_DETECTOR=auto`` runs without a detector)."""
    off = service.detector_off
    if off is None or service.settings.detector == "none":
        return Health()
    return Health(details={"detector": off})


@router.get(
    "/ready",
    response_model=Ready,
    responses=error_responses(503),
    summary="Model loaded and batcher running",
)
async def ready(service: ServiceDep) -> Ready:
    """200 when requests can be served; 503 (with the reason) while starting, draining or
    after the batcher died."""
    reason = service.not_ready_reason()
    if reason is not None or service.predictor is None:
        raise NotServing(
            reason or "not ready", state="shutting_down" if service.draining else "not_ready"
        )
    return Ready(model=service.predictor.config.name, device=str(service.predictor.device))


@router.head("/health", response_model_exclude_none=True, include_in_schema=False)
async def health_head(service: ServiceDep) -> Health:
    """``HEAD /health``: as ``GET`` without the body (load balancers probe with HEAD)."""
    return await health(service)


@router.head("/ready", include_in_schema=False)
async def ready_head(service: ServiceDep) -> Ready:
    """``HEAD /ready``: the status of ``GET /ready`` (200 or 503) without the body."""
    return await ready(service)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
async def metrics(service: ServiceDep) -> Response:
    """Requests, latencies, batch sizes, queue depth, inference time, rejections."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/model",
    response_model=ModelMetadata,
    dependencies=[Depends(require_api_key)],
    responses=error_responses(401, 503),
    summary="The served checkpoint's metadata",
)
async def model(service: ServiceDep) -> ModelMetadata:
    """Name, architecture, keypoint spec, codec, normalisation, provenance, metrics."""
    if service.config is None or service.predictor is None:
        raise NotServing("the model is not loaded")
    return ModelMetadata(**service.model_info())
