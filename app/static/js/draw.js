// Drawing the service's answers on a canvas: boxes, scores, skeletons and keypoints.
// Coordinates in the JSON are image pixels (x, y) of the image as displayed (EXIF applied).

// Distinct, saturated colours (one per person in photo mode, per track ID in webcam mode).
export const PALETTE = [
  [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128], [170, 110, 40],
  [128, 0, 0], [0, 0, 128],
];

export function colorOf(index) {
  const n = PALETTE.length;
  return PALETTE[((index % n) + n) % n];
}

export function css([r, g, b]) {
  return `rgb(${r}, ${g}, ${b})`;
}

/** A person is drawn unless the detector gave it a box score below the threshold. */
export function personShown(person, bboxThr) {
  const s = person.bbox_score;
  return s === undefined || s === null || s >= bboxThr;
}

/** A keypoint is drawn when the service calls it visible (if it says) and it scores enough. */
export function keypointShown(kp, kptThr) {
  return (kp.visible ?? true) && kp.score >= kptThr;
}

function label(ctx, text, x, y, color, size) {
  ctx.font = `600 ${size}px system-ui, sans-serif`;
  const w = ctx.measureText(text).width + size * 0.6;
  const h = size * 1.35;
  const top = Math.max(0, y - h);
  ctx.fillStyle = css(color);
  ctx.fillRect(x, top, w, h);
  const [r, g, b] = color;
  ctx.fillStyle = r * 0.3 + g * 0.59 + b * 0.11 > 150 ? "#000" : "#fff";
  ctx.textBaseline = "middle";
  ctx.fillText(text, x + size * 0.3, top + h / 2);
}

/**
 * Draw `persons` on `ctx`.
 * options: skeleton (pairs of keypoint indices), bboxThr, kptThr, scale [sx, sy] from
 * image pixels to canvas pixels, colorIndex(person, i) and caption(person, i).
 */
export function drawPersons(ctx, persons, options) {
  const { skeleton, bboxThr, kptThr, scale = [1, 1], colorIndex, caption } = options;
  const [sx, sy] = scale;
  const diag = Math.hypot(ctx.canvas.width, ctx.canvas.height);
  const lw = Math.max(2, Math.round(diag / 320));
  const font = Math.max(11, Math.round(diag / 70));
  persons.forEach((person, i) => {
    if (!personShown(person, bboxThr)) return;
    const color = colorOf(colorIndex(person, i));
    const [x1, y1, x2, y2] = person.bbox;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    if (person.bbox_source !== "image") {
      ctx.strokeStyle = css(color);
      ctx.lineWidth = Math.max(1, lw / 2);
      ctx.setLineDash([lw * 3, lw * 2]);
      ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
      ctx.setLineDash([]);
    }
    const shown = person.keypoints.map((kp) => keypointShown(kp, kptThr));
    ctx.strokeStyle = css(color);
    ctx.lineWidth = lw;
    for (const [a, b] of skeleton) {
      if (!shown[a] || !shown[b]) continue;
      const p = person.keypoints[a];
      const q = person.keypoints[b];
      ctx.beginPath();
      ctx.moveTo(p.x * sx, p.y * sy);
      ctx.lineTo(q.x * sx, q.y * sy);
      ctx.stroke();
    }
    person.keypoints.forEach((kp, k) => {
      if (!shown[k]) return;
      ctx.beginPath();
      ctx.arc(kp.x * sx, kp.y * sy, lw * 1.6, 0, 2 * Math.PI);
      ctx.fillStyle = css(color);
      ctx.fill();
      ctx.lineWidth = Math.max(1, lw / 2);
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    });
    label(ctx, caption(person, i), Math.max(0, x1 * sx), Math.max(0, y1 * sy), color, font);
  });
}
