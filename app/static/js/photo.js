// Photo mode: images -> POST /predict -> boxes, skeletons and a table per image, drawn here.

import { postForm } from "./api.js";
import { css, colorOf, drawPersons, keypointShown, personShown } from "./draw.js";
import { clearMessage, showMessage } from "./ui.js";

// The page asks for (nearly) everything and filters with its sliders, so moving a slider
// redraws without a new request. Services before person detection ignore these parameters.
export const REQUEST_PARAMS = { bbox_thr: 0.05, kpt_thr: 0 };

const state = { model: null, rawText: null, images: [], thresholds: { bbox: 0.3, kpt: 0.3 } };

const fmt = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
}

async function bitmapOf(blob) {
  try {
    return await createImageBitmap(blob, { imageOrientation: "from-image" });
  } catch {
    return null; // the browser cannot decode it; the service may still have answered
  }
}

function caption(person, i) {
  const s = person.bbox_score;
  return s === undefined || s === null ? `#${i + 1}` : `#${i + 1} ${fmt(s)}`;
}

function redrawImage(item) {
  const { canvas, result } = item;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const base = state.heatmaps && item.heatmap ? item.heatmap : item.bitmap;
  if (base) ctx.drawImage(base, 0, 0, canvas.width, canvas.height);
  else {
    ctx.fillStyle = "#333";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  drawPersons(ctx, result.persons, {
    skeleton: state.model.skeleton,
    bboxThr: state.thresholds.bbox,
    kptThr: state.thresholds.kpt,
    scale: [canvas.width / result.width, canvas.height / result.height],
    colorIndex: (_, i) => i,
    caption,
  });
  item.rows.forEach((row, i) => {
    const person = result.persons[i];
    row.classList.toggle("hidden-person", !personShown(person, state.thresholds.bbox));
    person.keypoints.forEach((kp, k) => {
      row.cells[5 + k].classList.toggle("low", !keypointShown(kp, state.thresholds.kpt));
    });
  });
}

function personTable(result) {
  const names = state.model.keypoints;
  const head = el("tr", {}, [
    el("th", { scope: "col", textContent: "Person" }),
    el("th", { scope: "col", textContent: "Box score" }),
    el("th", { scope: "col", textContent: "Box from" }),
    el("th", { scope: "col", textContent: "Score" }),
    el("th", { scope: "col", textContent: "Box x1, y1, x2, y2" }),
    ...names.map((n) => el("th", { scope: "col", textContent: n })),
  ]);
  const rows = result.persons.map((p, i) => {
    const swatch = el("span", { className: "swatch" });
    swatch.style.background = css(colorOf(i));
    const first = el("th", { scope: "row" }, [swatch, `#${i + 1}`]);
    first.dataset.color = css(colorOf(i));
    return el("tr", { className: "person" }, [
      first,
      el("td", { textContent: fmt(p.bbox_score) }),
      el("td", { textContent: p.bbox_source ?? "–" }),
      el("td", { textContent: fmt(p.score) }),
      el("td", { textContent: p.bbox.map((v) => Math.round(v)).join(", ") }),
      ...p.keypoints.map((kp) => el("td", { textContent: fmt(kp.score) })),
    ]);
  });
  const caption = el("caption", {
    textContent: `${count(result.persons.length)}; keypoint scores (grey: below the threshold)`,
  });
  const table = el("table", { className: "persons" }, [caption, el("thead", {}, [head]),
    el("tbody", {}, rows)]);
  return { wrap: el("div", { className: "table-wrap" }, [table]), rows };
}

/** Persons as drawn: before person detection the service gave no `bbox_source`; a box that is
 * the whole image is then the whole-image fallback. */
function normalise(result) {
  const whole = (b) => b[0] <= 0 && b[1] <= 0 && b[2] >= result.width && b[3] >= result.height;
  return result.persons.map((p) =>
    p.bbox_source !== undefined ? p : { ...p, bbox_source: whole(p.bbox) ? "image" : null });
}

/** `n` and what the model finds, its own category (`model.category`, e.g. an animal model's
 * "quadruped"), with "(s)"; services before the field answered persons. */
function count(n) {
  return `${n} ${state.model?.category ?? "person"}(s)`;
}

/** Without a person detector the service says why and how to send boxes (`detection_off`). */
function showDetectionOff(reason) {
  const note = document.getElementById("detection-off");
  note.hidden = !reason;
  note.textContent = reason
    ? `Person detection is off, so each photo is one whole-image person. The service says: ${reason}.`
    : "";
}

async function render(files, json) {
  const results = document.getElementById("results");
  results.replaceChildren();
  state.model = json.model;
  state.images = [];
  showDetectionOff(json.model?.detection_off);
  for (const [i, answer] of json.images.entries()) {
    const result = { ...answer, persons: normalise(answer) };
    const bitmap = await bitmapOf(files[i]);
    const canvas = el("canvas", { width: result.width, height: result.height });
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `${result.filename} with ${count(result.persons.length)} drawn`);
    const { wrap, rows } = personTable(result);
    const title = el("h3", {
      textContent: `${result.filename} · ${result.width}×${result.height} · ${count(result.persons.length)}`,
    });
    const card = el("article", { className: "result" }, [title, canvas, wrap]);
    results.append(card);
    const item = { file: files[i], bitmap, canvas, result, rows, heatmap: null };
    state.images.push(item);
    redrawImage(item);
  }
  results.dataset.state = "done";
}

async function loadHeatmaps() {
  for (const item of state.images) {
    if (item.heatmap) continue;
    const response = await postForm("/visualize", () => {
      const form = new FormData();
      form.append("file", item.file, item.file.name);
      return form;
    }, { mode: "heatmap" });
    item.heatmap = await bitmapOf(await response.blob());
  }
}

async function predict(files) {
  if (!files.length) return;
  clearMessage();
  const results = document.getElementById("results");
  results.dataset.state = "loading";
  document.getElementById("timing").textContent = `Sending ${files.length} image(s)…`;
  const started = performance.now();
  try {
    const response = await postForm("/predict", () => {
      const form = new FormData();
      for (const f of files) form.append("files", f, f.name);
      return form;
    }, REQUEST_PARAMS);
    const text = await response.text();
    const roundTrip = performance.now() - started;
    const json = JSON.parse(text);
    state.rawText = text;
    document.getElementById("download").disabled = false;
    const t = json.timing ?? {};
    document.getElementById("timing").textContent =
      `Service: ${fmt(t.total_ms, 1)} ms (decode ${fmt(t.decode_ms, 1)}, inference ` +
      `${fmt(t.inference_ms, 1)}) · round trip ${roundTrip.toFixed(1)} ms`;
    await render(files, json);
    if (state.heatmaps) {
      await loadHeatmaps();
      state.images.forEach(redrawImage);
    }
  } catch (e) {
    results.dataset.state = "error";
    document.getElementById("timing").textContent = "";
    showMessage(e.message);
  }
}

function download() {
  if (!state.rawText) return;
  const url = URL.createObjectURL(new Blob([state.rawText], { type: "application/json" }));
  const a = el("a", { href: url, download: "heatpose-predict.json" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Redraw every image with new thresholds (no request). */
export function setThresholds(bbox, kpt) {
  state.thresholds = { bbox, kpt };
  state.images.forEach(redrawImage);
}

export function initPhoto() {
  const input = document.getElementById("files");
  input.addEventListener("change", () => predict([...input.files]));
  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    predict([...e.dataTransfer.files]);
  });
  document.getElementById("download").addEventListener("click", download);
  const toggle = document.getElementById("heatmap");
  toggle.addEventListener("change", async () => {
    state.heatmaps = toggle.checked;
    try {
      if (state.heatmaps) await loadHeatmaps();
    } catch (e) {
      showMessage(e.message);
      toggle.checked = false;
      state.heatmaps = false;
    }
    state.images.forEach(redrawImage);
    document.getElementById("results").dataset.layer = state.heatmaps ? "heatmap" : "image";
  });
}
