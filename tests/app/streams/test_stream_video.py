"""One per-frame logic: ``heatpose predict VIDEO`` and ``WS /v1/stream`` give the same message
for the same frames and options (detector frames, followed tracks, tracking, smoothing).

The same synthetic video goes (a) as an MP4 through the CLI (``heatpose_cli.predict.main``) and (b)
frame by frame, as lossless PNGs of the very frames the CLI decoded from that MP4, through a
stream of the real app (the tiny pose checkpoint of ``conftest.py``; the person detector, when
there is one, a stand-in that knows the true boxes). Every frame's JSON line must equal the
stream's answer, except the stream's live-only ``latency_ms`` and ``dropped``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heatpose_cli.predict import main
from heatpose_cli.predict_video import probe, read_frames
from models.video.video_files import write_video
from tests.app.streams.test_stream import TruthDetector, encode
from training.synthetic.synthetic_video import make_video


@pytest.mark.slow
@pytest.mark.parametrize(
    ("detector", "query"),
    [
        (True, {"det_interval": "3", "kpt_thr": "0", "smoothing": "one_euro", "beta": "0.1"}),
        (False, {"det_interval": "5", "kpt_thr": "0.2", "smoothing": "none", "max_persons": "1"}),
    ],
)
def test_video_cli_lines_equal_the_stream_answers(
    client: Any, app_checkpoint: Path, tmp_path: Path, detector: bool, query: dict[str, str]
) -> None:
    video = make_video("crossing")
    path = tmp_path / "crossing.mp4"
    write_video(path, video.frames, video.fps)
    frames = list(read_frames(path))  # what the CLI sees (the MP4 is lossy)
    fps = probe(path).fps
    truth = video.truth[: len(frames)]

    cli_detector = TruthDetector(frames, truth) if detector else None
    flags = [f"--{k.replace('_', '-')}" for k in query]
    argv = [str(path), "--out", str(tmp_path / "out"), "--no-flip-test", "--detector", "none"]
    argv += [x for flag, v in zip(flags, query.values(), strict=True) for x in (flag, v)]
    argv += ["--checkpoint", str(app_checkpoint), "--device", "cpu"]
    assert main(argv, detector=cli_detector) == 0
    lines = [json.loads(s) for s in (tmp_path / "out" / "crossing.jsonl").read_text().splitlines()]

    stream_detector = TruthDetector(frames, truth) if detector else None
    c = client(stand_in=stream_detector)
    if stream_detector is not None:
        stream_detector.calls = 0  # the warm-up's call, if any
    answers = []
    url = "/v1/stream?flip_test=false&" + "&".join(f"{k}={v}" for k, v in query.items())
    with c.websocket_connect(url) as ws:
        for seq, frame in enumerate(frames):
            ws.send_text(json.dumps({"seq": seq, "ts_ms": seq * 1000.0 / fps}))
            ws.send_bytes(encode(frame, "PNG"))
            answer = ws.receive_json()
            assert answer.pop("dropped") == 0 and answer.pop("latency_ms") >= 0
            answers.append(answer)

    assert len(lines) == len(answers) == len(frames)
    for line, answer in zip(lines, answers, strict=True):
        assert line == answer, line["seq"]
    persons = [p for m in lines for p in m["persons"]]
    assert len({p["track_id"] for p in persons}) >= 1
    assert max(len(m["persons"]) for m in lines) == int(query.get("max_persons", 2))
    if cli_detector is not None and stream_detector is not None:
        # det_interval 3 and every track followed in between: a third of the frames detect
        assert cli_detector.calls == stream_detector.calls == len(range(0, len(frames), 3))
        detected = [p["bbox_score"] for m in lines[::3] for p in m["persons"]]
        assert detected == pytest.approx([0.9] * len(detected))
