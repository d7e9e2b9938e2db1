// The demo page: mode switch, threshold sliders, and the two modes.

import { initPhoto, setThresholds } from "./photo.js";
import { initWebcam, setStreamThresholds, stopWebcam } from "./webcam.js";
import { clearMessage } from "./ui.js";

function setMode(mode) {
  for (const name of ["photo", "webcam"]) {
    document.getElementById(name).hidden = name !== mode;
    document.getElementById(`mode-${name}`).setAttribute("aria-pressed", String(name === mode));
  }
  if (mode !== "webcam") stopWebcam();
  clearMessage();
}

function initSliders() {
  const bbox = document.getElementById("bbox-thr");
  const kpt = document.getElementById("kpt-thr");
  const update = () => {
    document.getElementById("bbox-thr-value").textContent = Number(bbox.value).toFixed(2);
    document.getElementById("kpt-thr-value").textContent = Number(kpt.value).toFixed(2);
    setThresholds(Number(bbox.value), Number(kpt.value));
    setStreamThresholds(Number(bbox.value), Number(kpt.value));
  };
  bbox.addEventListener("input", update);
  kpt.addEventListener("input", update);
  update();
}

document.getElementById("mode-photo").addEventListener("click", () => setMode("photo"));
document.getElementById("mode-webcam").addEventListener("click", () => setMode("webcam"));
initSliders();
initPhoto();
initWebcam();
if (window.location.hash === "#webcam") setMode("webcam");
document.body.dataset.ready = "true";
