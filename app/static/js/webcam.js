// Webcam mode: camera -> JPEG frames at a chosen rate -> WS /v1/stream -> skeletons with
// track IDs over the live video. One frame in flight at a time: a new frame is sent when the
// previous answer arrived and the rate allows (the server keeps only the latest frame anyway).
// The readout shows what really happened: frames/s sent and answered, the ticks of the chosen
// rate skipped here because an answer was pending, and the frames the service dropped.

import { apiKey, getJson, renewKey } from "./api.js";
import { drawPersons } from "./draw.js";
import { clearMessage, showMessage } from "./ui.js";

const ANSWER_TIMEOUT_MS = 5000; // an unanswered frame stops blocking the next after this
const JPEG_QUALITY = 0.8;

const $ = (id) => document.getElementById(id);

const cam = {
  stream: null, socket: null, timer: null, seq: 0, inFlight: null, answers: [], sent: [],
  skipped: 0, dropped: 0, last: null, thresholds: { bbox: 0.3, kpt: 0.3 }, skeleton: null,
  stopping: false,
};

function streamUrl() {
  const url = new URL("/v1/stream", window.location.href);
  url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
  return url;
}

// The API key travels in the Sec-WebSocket-Protocol header, never in the URL (URLs end up in
// access logs): "heatpose" plus "heatpose.key.<base64url of the UTF-8 key>"; the service
// selects "heatpose" and never echoes the key.
function streamProtocols() {
  const key = apiKey();
  if (!key) return ["heatpose"];
  const bytes = new TextEncoder().encode(key);
  const b64 = btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  return ["heatpose", `heatpose.key.${b64}`];
}

// COCO's links, for a service that does not tell its own (GET /v1/model does).
const COCO_SKELETON = [[15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12],
  [5, 6], [5, 7], [6, 8], [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6]];

async function loadSkeleton() {
  // Stream messages carry keypoints but not the links between them: ask the model once.
  if (cam.skeleton) return;
  try {
    cam.skeleton = (await getJson("/v1/model")).keypoints?.skeleton ?? COCO_SKELETON;
  } catch {
    cam.skeleton = COCO_SKELETON;
  }
}

function drawAnswer() {
  const canvas = $("overlay");
  const video = $("video");
  if (canvas.width !== video.videoWidth || canvas.height !== video.videoHeight) {
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
  }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const msg = cam.last;
  if (!msg || !msg.width) return;
  drawPersons(ctx, msg.persons, {
    skeleton: cam.skeleton,
    bboxThr: cam.thresholds.bbox,
    kptThr: cam.thresholds.kpt,
    scale: [canvas.width / msg.width, canvas.height / msg.height],
    colorIndex: (p, i) => (p.track_id ?? i),
    caption: (p, i) => `ID ${p.track_id ?? i}`,
  });
}

/** Events per second over the last 3 s of `times` (performance.now() stamps; pruned here). */
function perSecond(times, now) {
  while (times.length && now - times[0] >= 3000) times.shift();
  const span = times.length > 1 ? (now - times[0]) / 1000 : 0;
  return span > 0 ? (times.length - 1) / span : 0;
}

function readout() {
  const now = performance.now();
  $("cam-sent").textContent = perSecond(cam.sent, now).toFixed(1);
  $("cam-fps").textContent = perSecond(cam.answers, now).toFixed(1);
  $("cam-skipped").textContent = String(cam.skipped);
  if (cam.last) {
    $("cam-latency").textContent = `${Math.round(cam.last.latency_ms)} ms`;
    $("cam-tracks").textContent = cam.last.persons.map((p) => p.track_id).join(", ") || "none";
  }
  $("cam-dropped").textContent = String(cam.dropped);
}

function onMessage(event) {
  let msg;
  try {
    msg = JSON.parse(event.data);
  } catch {
    return;
  }
  cam.inFlight = null;
  if (msg.error) {
    showMessage(`Frame ${msg.seq ?? ""} was refused: ${msg.error.message ?? msg.error.code}`);
    return;
  }
  cam.answers.push(performance.now());
  cam.dropped += msg.dropped ?? 0;
  cam.last = msg;
  drawAnswer();
  readout();
}

function sendFrame() {
  const video = $("video");
  const socket = cam.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN || !video.videoWidth) return;
  if (cam.inFlight !== null && performance.now() - cam.inFlight < ANSWER_TIMEOUT_MS) {
    cam.skipped += 1; // this tick of the chosen rate: the previous answer is still pending
    readout();
    return;
  }
  const grab = document.createElement("canvas");
  grab.width = video.videoWidth;
  grab.height = video.videoHeight;
  grab.getContext("2d").drawImage(video, 0, 0);
  cam.inFlight = performance.now();
  grab.toBlob(async (blob) => {
    if (!blob || socket.readyState !== WebSocket.OPEN) return;
    const bytes = await blob.arrayBuffer();
    socket.send(JSON.stringify({ seq: cam.seq++, ts_ms: Date.now() }));
    socket.send(bytes);
    cam.sent.push(performance.now());
  }, "image/jpeg", JPEG_QUALITY);
}

function schedule() {
  clearInterval(cam.timer);
  const rate = Number($("rate").value);
  cam.timer = setInterval(sendFrame, 1000 / rate);
}

const CLOSE_REASONS = {
  1001: "The service is shutting down; the stream was closed.",
  1013: "The service has as many streams open as it allows; try again later.",
};

function connect() {
  const socket = new WebSocket(streamUrl(), streamProtocols());
  socket.binaryType = "arraybuffer";
  cam.socket = socket;
  socket.addEventListener("open", () => {
    clearMessage();
    schedule();
  });
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", async (event) => {
    clearInterval(cam.timer);
    if (cam.stopping || cam.socket !== socket) return;
    if (event.code === 1008) {
      const reason = apiKey()
        ? "The stream refused the API key. Enter the service's key:"
        : "The stream needs the service's API key. Enter it:";
      if (await renewKey(reason)) connect();
      else stop();
      return;
    }
    showMessage(CLOSE_REASONS[event.code] ??
      `The stream closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""}). ` +
      "Does this service offer WS /v1/stream?");
    stop();
  });
}

async function start() {
  clearMessage();
  if (!navigator.mediaDevices?.getUserMedia) {
    showMessage("This browser gives no camera access here (it needs https or localhost).");
    return;
  }
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false,
    });
  } catch (e) {
    showMessage(`No camera: ${e.message}`);
    return;
  }
  await loadSkeleton();
  const video = $("video");
  video.srcObject = cam.stream;
  await video.play();
  cam.stopping = false;
  cam.seq = 0;
  cam.dropped = 0;
  cam.skipped = 0;
  cam.answers = [];
  cam.sent = [];
  cam.inFlight = null;
  $("cam-start").disabled = true;
  $("cam-stop").disabled = false;
  connect();
}

function stop() {
  cam.stopping = true;
  clearInterval(cam.timer);
  if (cam.socket) cam.socket.close(1000);
  cam.socket = null;
  if (cam.stream) cam.stream.getTracks().forEach((t) => t.stop());
  cam.stream = null;
  $("video").srcObject = null;
  $("cam-start").disabled = false;
  $("cam-stop").disabled = true;
}

/** New thresholds: redraw the last answer (no new frame needed). */
export function setStreamThresholds(bbox, kpt) {
  cam.thresholds = { bbox, kpt };
  drawAnswer();
}

export function stopWebcam() {
  if (cam.stream) stop();
}

export function initWebcam() {
  $("cam-start").addEventListener("click", start);
  $("cam-stop").addEventListener("click", stop);
  $("rate").addEventListener("change", () => {
    if (cam.socket) schedule();
  });
}
