"""Schemathesis (4.x) against the app's own OpenAPI schema: no 5xx, no off-schema answer.

Uses schemathesis' Python API (operation strategies driven by Hypothesis) on the ASGI app with
its lifespan started once: the real model and batcher answer. Bounded to a few dozen generated
requests per operation and mode, well under a minute in all.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.settings import Settings
from tests.helpers.images import encode, noise

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    ("POST", "/predict", 30),
    ("POST", "/visualize", 30),
    ("GET", "/health", 5),
    ("GET", "/ready", 5),
    ("GET", "/metrics", 5),
    ("GET", "/v1/model", 5),
]


@pytest.fixture(scope="module")
def api_schema(app_checkpoint):
    settings_ = Settings(
        _env_file=None,
        checkpoint=str(app_checkpoint),
        detector="none",
        max_upload_bytes=200_000,
        max_image_pixels=2_000_000,
    )
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(settings_))
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # stop the batcher and release the model


def test_schema_lists_exactly_the_tested_operations(api_schema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == {(m, p) for m, p, _ in OPERATIONS}


def run_cases(operation, mode: GenerationMode, examples: int, **fixed) -> None:
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @settings(
        max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    check()


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "examples"), OPERATIONS)
def test_generated_requests(api_schema, method, path, examples) -> None:
    run_cases(api_schema[path][method], GenerationMode.POSITIVE, examples)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/predict", "/visualize"])
def test_schema_violating_requests(api_schema, path) -> None:
    run_cases(api_schema[path]["POST"], GenerationMode.NEGATIVE, 30)


def jpeg() -> bytes:
    return encode(noise(64, 48), "JPEG")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "body"), [("/predict", {"files": [jpeg()]}), ("/visualize", {"file": jpeg()})]
)
def test_generated_options_on_a_real_image(api_schema, path, body) -> None:
    """A valid image with generated query options: the 200 answers must match the schema."""
    run_cases(api_schema[path]["POST"], GenerationMode.POSITIVE, 20, body=body)
