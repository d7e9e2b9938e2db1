"""``WS /v1/stream``: live video in, one pose message per processed frame out.

Protocol (docs/streaming.md, "WS /v1/stream"):

- Opening: query parameters of :class:`~app.streams.stream_session.StreamParams`; the API key (when
  set) as for ``/predict``, or offered as a subprotocol (``Sec-WebSocket-Protocol: heatpose,
  heatpose.key.<base64url>``, :mod:`app.http.auth`; what browsers use), or (old clients, redacted
  from the logs) as the ``api_key`` query parameter. Refusals are closes after the
  handshake: 1008 (no or wrong key; invalid parameter, preceded by an error message naming it),
  1013 (``HEATPOSE_MAX_STREAMS`` open, or the model not loaded), 1001 (shutting down).
- Client -> server: binary = one JPEG/PNG/WebP/BMP frame; text ``{"seq": int, "ts_ms": number}``
  applies to the next frame.
- Server -> client: one text message per processed frame, or ``{"error": {"code", "message",
  "seq"}}`` for a frame (or a text message) that could not be used; the stream goes on.

Two tasks per connection: the receiver puts frames into a :class:`FrameSlot` (latest wins) and
the worker has the service decode and infer each (``PoseService.infer_frame``: the frame's
pixels held in the process-wide pixel budget of ``/predict``, the batchers shared with it),
tracks and smooths (:class:`models.video.video_tracking.VideoTracker`, as ``heatpose predict
VIDEO``) and sends. The worker awaits each send, so at most one answer is in flight per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.engine.admission import PixelBudget
from app.engine.failures import NotServing
from app.engine.inference import FrameRequest, PredictOptions
from app.engine.service import PoseService
from app.errors import ApiError
from app.http.auth import STREAM_PROTOCOL, key_from_subprotocols, presented_key
from app.http.errors import DOMAIN_ERRORS, http_error
from app.streams.registry import StreamRegistry
from app.streams.stream_session import (
    Frame,
    FrameSlot,
    StreamParamError,
    StreamParams,
    frame_message,
    parse_stream_params,
)
from models.video.video_tracking import VideoTracker

router = APIRouter(tags=["inference"])

POLICY, GOING_AWAY, TRY_AGAIN_LATER, NORMAL = 1008, 1001, 1013, 1000


def registry_of(ws: WebSocket) -> StreamRegistry:
    """The app's :class:`StreamRegistry` (``create_app`` makes it)."""
    registry: StreamRegistry = ws.app.state.streams
    return registry


def key_ok(expected: str | None, ws: WebSocket) -> bool:
    """The configured key (if any) in a header (as ``/predict``), a subprotocol or the
    ``api_key`` parameter."""
    if expected is None:
        return True
    got = (
        presented_key(ws.headers)
        or key_from_subprotocols(ws.scope.get("subprotocols", ()))
        or ws.query_params.get("api_key")
    )
    return got is not None and hmac.compare_digest(got.encode(), expected.encode())


def _reason(text: str) -> str:
    """A close reason fits 123 bytes."""
    return text.encode()[:123].decode(errors="ignore")


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Poses of a live video, tracked and smoothed (see the module docstring)."""
    service: PoseService = ws.app.state.service
    registry = registry_of(ws)
    offered = ws.scope.get("subprotocols", ())
    await ws.accept(subprotocol=STREAM_PROTOCOL if STREAM_PROTOCOL in offered else None)
    key = service.settings.api_key
    if not key_ok(None if key is None else key.get_secret_value(), ws):
        await ws.close(POLICY, "missing or wrong API key (header, subprotocol or api_key)")
        return
    try:
        params = parse_stream_params(ws.query_params, ignore=("api_key",))
    except StreamParamError as e:
        await ws.send_json({"error": {"code": "invalid_parameter", "message": str(e)}})
        await ws.close(POLICY, _reason(f"invalid parameter: {e}"))
        return
    if service.draining or registry.draining:
        await ws.close(GOING_AWAY, "the server is shutting down")
        return
    try:
        options = service.resolve(
            PredictOptions(
                flip_test=params.flip_test, max_persons=params.max_persons, kpt_thr=params.kpt_thr
            )
        )
    except NotServing as e:
        await ws.close(TRY_AGAIN_LATER, _reason(f"try again later: {e}"))
        return
    slot = FrameSlot()
    if not registry.open(slot):
        registry.metrics.frame_errors.labels("too_many_streams").inc()
        await ws.close(TRY_AGAIN_LATER, f"try again later: {registry.max_streams} streams open")
        return
    try:
        reason = await Connection(ws, service, registry, slot, params, options).run()
        if reason == "drain":
            await _close(ws, GOING_AWAY, "the server is shutting down")
        elif reason == "idle":
            idle = service.settings.stream_idle_timeout_s
            await _close(ws, NORMAL, f"idle: no message for {idle:g} s")
    finally:
        registry.close(slot)  # after the close frame: the drain waits for it


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):  # client gone
        await ws.close(code, reason)


async def cancel_and_wait(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until they have ended, their exceptions retrieved.

    ``asyncio.wait``, not ``gather``: when the calling task is cancelled again meanwhile (a
    shutdown, or the test client's cancel scope, which repeats its cancel), ``gather`` raises a
    child's ``CancelledError`` instead of the canceller's own, and a cancel scope that does
    not recognise it lets it escape as an error.
    """
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: each task handled its own errors


class Connection:
    """The receiving and the working task of one admitted stream (``options``: resolved)."""

    def __init__(
        self,
        ws: WebSocket,
        service: PoseService,
        registry: StreamRegistry,
        slot: FrameSlot,
        params: StreamParams,
        options: PredictOptions,
    ) -> None:
        self.ws, self.service, self.slot, self.params = ws, service, slot, params
        self.metrics, self.options = registry.metrics, options
        self.budget: PixelBudget = ws.app.state.pixel_budget
        self.tracker = VideoTracker(params.tracking, has_detector=service.detector is not None)
        self.send_lock = asyncio.Lock()
        self.received = 0

    async def run(self) -> str | None:
        """Until the client leaves, goes idle or the app drains; returns the reason. An
        aborted slot (a shutdown that cannot wait, :meth:`StreamRegistry.drain_then`) ends the
        current frame's work too."""
        tasks = [asyncio.create_task(c) for c in (self.receive(), self.slot.aborted.wait())]
        worker = asyncio.create_task(self.work())
        try:
            await asyncio.wait([worker, tasks[1]], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([*tasks, worker])
        return self.slot.closed

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(message))

    async def error(self, code: str, message: str, seq: int | None) -> None:
        """Send an error message; a client that has left (e.g. while its frame waited for
        pixel budget) ends the stream."""
        self.metrics.frame_errors.labels(code).inc()
        try:
            await self.send({"error": {"code": code, "message": message, "seq": seq}})
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.slot.close("disconnect")

    async def receive(self) -> None:
        """Frames into the slot; a text message sets the next frame's ``seq`` / ``ts_ms``."""
        idle = self.service.settings.stream_idle_timeout_s
        pending: dict[str, Any] = {}
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(self.ws.receive(), idle)
                except TimeoutError:
                    self.slot.close("idle")
                    return
                if msg["type"] == "websocket.disconnect":
                    self.slot.close("disconnect")
                    return
                if msg.get("bytes") is not None:
                    seq = int(pending.get("seq", self.received))
                    ts = float(pending.get("ts_ms", time.time() * 1000.0))
                    self.received, pending = self.received + 1, {}
                    self.metrics.frames_in.inc()
                    if self.slot.put(Frame(msg["bytes"], seq, ts, time.monotonic())):
                        self.metrics.frames_dropped.inc()
                elif msg.get("text") is not None:
                    try:
                        pending = parse_control(msg["text"])
                    except ValueError as e:
                        await self.error("invalid_message", str(e), None)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.slot.close("disconnect")

    async def work(self) -> None:
        """Take the newest frame, answer it; stop when the slot closes."""
        while (taken := await self.slot.take()) is not None:
            frame, dropped = taken
            try:
                message = await self.process(frame, dropped)
            except ApiError as e:
                self.slot.dropped += dropped  # reported with the next answer
                await self.error(e.code, e.message, frame.seq)
                continue
            except DOMAIN_ERRORS as e:
                if isinstance(e, NotServing):
                    self.slot.close("drain")
                    return
                err = http_error(e)
                self.slot.dropped += dropped
                await self.error(err.code, err.message, frame.seq)
                continue
            try:
                await self.send(message)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.slot.close("disconnect")
                return
            self.metrics.frames_processed.inc()
            self.metrics.latency.observe(time.monotonic() - frame.arrival)

    async def process(self, frame: Frame, dropped: int) -> dict[str, Any]:
        """Decode (the limits of ``/predict``), infer, track and smooth one frame.

        Its declared pixels are held in the process-wide pixel budget (:mod:`app.engine.admission`)
        from before decoding until its crops are made, as a ``/predict`` request's: a frame
        that can never fit is refused (413 ``too_many_pixels``), one that finds no room by its
        deadline (arrival + ``HEATPOSE_REQUEST_TIMEOUT_S``) times out (504 ``timeout``).
        """
        s = self.service.settings
        name = f"frame {frame.seq}"
        if len(frame.data) > s.max_upload_bytes:
            raise ApiError(
                413,
                "payload_too_large",
                f"{name} has {len(frame.data):,} bytes; the limit is {s.max_upload_bytes:,} "
                "(HEATPOSE_MAX_UPLOAD_BYTES)",
            )
        deadline = frame.arrival + s.request_timeout_s
        request = FrameRequest(
            frame.data, name, self.options, deadline, self.budget, plan=self.tracker.plan
        )
        image, plan, found = await self.service.infer_frame(request)
        persons = self.tracker.update(plan, found, timestamp_s=frame.ts_ms / 1000.0)
        size = (image.width, image.height)
        names, kpt_thr = self.service.model.spec.names, self.params.kpt_thr
        message = frame_message(frame.seq, frame.ts_ms, size, persons, names=names, kpt_thr=kpt_thr)
        latency_ms = round((time.monotonic() - frame.arrival) * 1000.0, 2)
        return {**message, "latency_ms": latency_ms, "dropped": dropped}


def parse_control(text: str) -> dict[str, Any]:
    """``{"seq": int, "ts_ms": number}`` (both optional) for the next frame.

    Raises:
        ValueError: not that object.
    """
    try:
        obj = json.loads(text)
    except RecursionError:  # nested too deep for the parser (a RuntimeError: not a ValueError)
        raise ValueError("text messages must be JSON {'seq', 'ts_ms'}: nested too deep") from None
    except ValueError as e:  # JSONDecodeError, or an integer of too many digits
        raise ValueError(f"text messages must be JSON {{'seq', 'ts_ms'}}: {e}") from None
    if not isinstance(obj, dict) or set(obj) - {"seq", "ts_ms"}:
        raise ValueError('a text message is {"seq": int, "ts_ms": number} for the next frame')
    seq, ts = obj.get("seq", 0), obj.get("ts_ms", 0.0)
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ValueError(f"seq must be an integer, got {seq!r}")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise ValueError(f"ts_ms must be a finite number, got {ts!r}")
    return obj
