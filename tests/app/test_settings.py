"""Settings: HEATPOSE_* variables and .env, defaults, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import SettingsError, load_settings, unknown_variables


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("HEATPOSE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # .env is read from the working directory


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEATPOSE_CHECKPOINT", "model.safetensors")
    s = load_settings()
    assert s.checkpoint == "model.safetensors" and s.device == "auto"
    assert (s.max_batch_size, s.max_queue_delay_ms, s.max_queue_delay_s) == (32, 5.0, 0.005)
    assert s.max_upload_bytes == 10_000_000 and s.max_image_pixels == 40_000_000
    assert s.max_images_per_request == 16 and s.flip_test is True and s.decode_mode is None
    assert s.api_key is None and s.cors_origins == [] and s.log_level == "info"
    assert s.cv2_threads == 1 and s.torch_threads is None


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "HEATPOSE_CHECKPOINT=from-dotenv.safetensors\nHEATPOSE_MAX_BATCH_SIZE=8\n"
        "HEATPOSE_API_KEY=sekrit-42\nHEATPOSE_CORS_ORIGINS=https://a.example, https://b.example\n"
    )
    monkeypatch.setenv("HEATPOSE_MAX_BATCH_SIZE", "4")  # the environment wins over .env
    monkeypatch.setenv("HEATPOSE_DEVICE", "CUDA:1")
    monkeypatch.setenv("HEATPOSE_DECODE_MODE", "shift")
    monkeypatch.setenv("HEATPOSE_FLIP_TEST", "false")
    s = load_settings()
    assert s.checkpoint == "from-dotenv.safetensors" and s.max_batch_size == 4
    assert s.device == "cuda:1" and s.decode_mode == "shift" and s.flip_test is False
    assert s.api_key is not None and s.api_key.get_secret_value() == "sekrit-42"
    assert "sekrit-42" not in repr(s)  # the key is never printed
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("HEATPOSE_CORS_ORIGINS", '["https://c.example"]')
    assert load_settings().cors_origins == ["https://c.example"]


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("HEATPOSE_MAX_BATCH_SIZE", "0"),
        ("HEATPOSE_MAX_BATCH_SIZE", "many"),
        ("HEATPOSE_DEVICE", "gpu"),
        ("HEATPOSE_DECODE_MODE", "fancy"),
        ("HEATPOSE_CROP", "gpu"),
        ("HEATPOSE_DECODE", "nvjpeg"),
        ("HEATPOSE_MAX_QUEUE_DELAY_MS", "-1"),
        ("HEATPOSE_REQUEST_TIMEOUT_S", "0"),
        ("HEATPOSE_LOG_LEVEL", "loud"),
        ("HEATPOSE_CORS_ORIGINS", "[not json"),
        ("HEATPOSE_CHECKPOINT", "  "),
        ("HEATPOSE_CV2_THREADS", "-1"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv("HEATPOSE_CHECKPOINT", "m.safetensors")
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert var in str(e.value) and repr(value) in str(e.value)


def test_default_checkpoint_is_the_published_dark_resnet50() -> None:
    from models.weights.zoo import ENTRIES

    s = load_settings()
    assert s.checkpoint == "res50-dark-coco-256x192"
    assert ENTRIES[s.checkpoint].decode_mode == "dark"


def test_unknown_variables_are_named_with_the_closest_known_one() -> None:
    environ = {
        "HEATPOSE_CHECKPIONT": "m.safetensors",
        "HEATPOSE_MAX_BATCHSIZE": "8",
        "HEATPOSE_CHECKPOINT": "m.safetensors",  # known: settings
        "HEATPOSE_HOME": "/tmp",  # known: the weight zoo's
        "HEATPOSE_WEIGHTS_URL": "http://mirror",
        "HEATPOSE_ZZZ": "1",
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == [
        "unknown variable HEATPOSE_CHECKPIONT is ignored (did you mean HEATPOSE_CHECKPOINT?)",
        "unknown variable HEATPOSE_MAX_BATCHSIZE is ignored "
        "(did you mean HEATPOSE_MAX_BATCH_SIZE?)",
        "unknown variable HEATPOSE_ZZZ is ignored",
    ]


def test_crop_and_decode_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert (s.crop, s.decode) == ("auto", "auto")
    monkeypatch.setenv("HEATPOSE_CROP", "device")
    monkeypatch.setenv("HEATPOSE_DECODE", "torch")
    assert (load_settings().crop, load_settings().decode) == ("device", "torch")
    hints = unknown_variables({"HEATPOSE_CORP": "device", "HEATPOSE_DECOD": "torch"})
    assert any("did you mean HEATPOSE_CROP?" in h for h in hints)
    assert any("did you mean HEATPOSE_DECODE?" in h for h in hints)


@pytest.mark.slow
@pytest.mark.anyio
async def test_cv2_threads_are_set_when_the_service_starts(serve_app) -> None:
    """OpenCV's pool woke a helper thread for every small crop (BENCHMARKS.md, "Threads"):
    the service runs OpenCV in its calling threads unless told otherwise."""
    import cv2

    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        async with serve_app(cv2_threads=0):
            assert cv2.getNumThreads() == 2  # 0: left as it was
        async with serve_app():
            assert cv2.getNumThreads() == 1
        async with serve_app(cv2_threads=3):
            assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)


def numeric_fields() -> dict[str, type]:
    """Every setting that is a number (``int``/``float``, optional or not), by field name."""
    import typing

    from app.settings import Settings

    out = {}
    for name, field in Settings.model_fields.items():
        kinds = set(typing.get_args(field.annotation)) or {field.annotation}
        numbers = kinds & {int, float}
        if numbers and bool not in kinds:
            out[name] = float if float in numbers else int
    return out


def test_every_numeric_setting_has_a_finite_range() -> None:
    """A lower and an upper bound on each (issue 23: HEATPOSE_SHUTDOWN_GRACE_S=inf passed
    validation and crashed start-up with an OverflowError)."""
    from app.settings import Settings

    fields = numeric_fields()
    assert {"shutdown_grace_s", "drain_delay_s", "max_upload_bytes", "port"} <= set(fields)
    for name in fields:
        bounds = {type(m).__name__ for m in Settings.model_fields[name].metadata}
        assert bounds & {"Ge", "Gt"} and bounds & {"Le", "Lt"}, f"{name}: {bounds}"


@pytest.mark.parametrize("name", sorted(numeric_fields()))
def test_infinite_huge_and_nan_numbers_are_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    var = "HEATPOSE_" + name.upper()
    values = ["inf", "-inf", "nan", "1e400", "1e30"] if numeric_fields()[name] is float else []
    for value in [*values, str(10**30), str(-(10**30))]:
        monkeypatch.setenv(var, value)
        with pytest.raises(SettingsError) as e:
            load_settings()
        message = str(e.value)
        assert var in message and repr(value) in message and "\n" not in message, message
