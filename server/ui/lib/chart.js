// Canvas charts for the dashboard: overlaid line charts (hover, drag-to-zoom, log scale,
// smoothing) and parallel coordinates. No dependencies: the page works offline.

import { fmtNum } from "./format.js";

export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];

export const color = (i) => PALETTE[i % PALETTE.length];

// "Nice" tick values between lo and hi (about n of them).
function ticks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const span = hi - lo;
  const raw = span / Math.max(1, n);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  const step = (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function fmtDuration(s) {
  if (!Number.isFinite(s)) return "";
  const a = Math.abs(s);
  if (a < 120) return `${+s.toFixed(1)}s`;
  if (a < 7200) return `${+(s / 60).toFixed(1)}m`;
  return `${+(s / 3600).toFixed(1)}h`;
}

// TensorBoard's debiased exponential moving average.
export function smooth(ys, weight) {
  if (!(weight > 0)) return ys;
  const out = new Float64Array(ys.length);
  let last = 0, n = 0;
  for (let i = 0; i < ys.length; i++) {
    const y = ys[i];
    if (!Number.isFinite(y)) { out[i] = y; continue; }
    last = last * weight + (1 - weight) * y;
    n++;
    out[i] = last / (1 - Math.pow(weight, n));
  }
  return out;
}

// Index of the point of xs (sorted) nearest to x.
function nearest(xs, x) {
  let lo = 0, hi = xs.length - 1;
  if (hi < 0) return -1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < x) lo = mid; else hi = mid;
  }
  return Math.abs(xs[lo] - x) <= Math.abs(xs[hi] - x) ? lo : hi;
}

function setupCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

// A line chart of several series over a shared x axis.
// series: [{name, color, xs: number[], ys: number[]}] with xs ascending.
export class LineChart {
  constructor(parent, { title = "", big = false, onZoom = null } = {}) {
    this.el = document.createElement("div");
    this.el.className = "chart" + (big ? " big" : "");
    this.titleEl = document.createElement("div");
    this.titleEl.className = "title";
    this.titleEl.textContent = title;
    this.canvas = document.createElement("canvas");
    this.tip = document.createElement("div");
    this.tip.className = "tip";
    this.tip.hidden = true;
    this.el.append(this.titleEl, this.canvas, this.tip);
    parent.append(this.el);
    this.series = [];
    this.opts = { logY: false, smoothing: 0, xKind: "step" };
    this.view = null; // [x0, x1] when zoomed
    this.onZoom = onZoom;
    this.drag = null;
    this.canvas.dataset.role = "chart";
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; this.hoverX = null; this.draw(); });
    this.canvas.addEventListener("mousedown", (e) => { this.drag = { x0: e.offsetX, x1: e.offsetX }; });
    window.addEventListener("mouseup", (e) => this.endDrag(e));
    this.canvas.addEventListener("dblclick", () => { this.view = null; this.draw(); if (this.onZoom) this.onZoom(null); });
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(this.canvas);
  }

  setData(series) {
    this.series = series;
    this.canvas.dataset.series = String(series.length);
    this.canvas.dataset.points = String(series.reduce((n, s) => n + s.xs.length, 0));
    this.draw();
  }

  setOptions(o) { Object.assign(this.opts, o); this.draw(); }

  destroy() { this.resize.disconnect(); this.el.remove(); }

  extent() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const s of this.series) {
      for (let i = 0; i < s.xs.length; i++) {
        const x = s.xs[i], y = s.ys[i];
        if (this.view && (x < this.view[0] || x > this.view[1])) continue;
        if (x < x0) x0 = x; if (x > x1) x1 = x;
        if (!Number.isFinite(y) || (this.opts.logY && y <= 0)) continue;
        if (y < y0) y0 = y; if (y > y1) y1 = y;
      }
    }
    if (this.view) [x0, x1] = this.view;
    if (!Number.isFinite(x0)) { x0 = 0; x1 = 1; }
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (!Number.isFinite(y0)) { y0 = this.opts.logY ? 1 : 0; y1 = this.opts.logY ? 10 : 1; }
    if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= this.opts.logY ? 0 : d; y1 += d; }
    return { x0, x1, y0, y1 };
  }

  draw() {
    const { ctx, w, h } = setupCanvas(this.canvas);
    if (w === 0) return;
    const pad = { l: 56, r: 10, t: 6, b: 22 };
    const e = this.extent();
    const log = this.opts.logY;
    const ty = (y) => (log ? Math.log10(y) : y);
    const ly0 = ty(e.y0), ly1 = ty(e.y1);
    const sx = (x) => pad.l + ((x - e.x0) / (e.x1 - e.x0)) * (w - pad.l - pad.r);
    const sy = (y) => h - pad.b - ((ty(y) - ly0) / (ly1 - ly0 || 1)) * (h - pad.t - pad.b);
    this.scale = { e, sx, pad, w, h };
    // Axes and grid.
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#6b7280";
    ctx.strokeStyle = "#eef0f3";
    ctx.lineWidth = 1;
    const yt = log
      ? ticks(Math.floor(ly0), Math.ceil(ly1), Math.min(6, Math.ceil(ly1) - Math.floor(ly0))).filter((t) => t >= ly0 - 1e-9 && t <= ly1 + 1e-9).map((t) => Math.pow(10, t))
      : ticks(e.y0, e.y1, 5);
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const t of yt) {
      const y = sy(t);
      ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
      ctx.fillText(fmtNum(t), pad.l - 4, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of ticks(e.x0, e.x1, Math.max(2, Math.floor((w - pad.l) / 90)))) {
      const x = sx(t);
      ctx.beginPath(); ctx.moveTo(x, pad.t); ctx.lineTo(x, h - pad.b); ctx.stroke();
      ctx.fillText(this.opts.xKind === "time" ? fmtDuration(t) : fmtNum(t), x, h - pad.b + 4);
    }
    // Series: raw values faint under the smoothed line when smoothing.
    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
    ctx.clip();
    const line = (xs, ys, stroke, alpha, width) => {
      ctx.globalAlpha = alpha;
      ctx.strokeStyle = stroke;
      ctx.lineWidth = width;
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < xs.length; i++) {
        const y = ys[i];
        if (!Number.isFinite(y) || (log && y <= 0)) { pen = false; continue; }
        const px = sx(xs[i]), py = sy(y);
        if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        pen = true;
      }
      if (xs.length === 1 && Number.isFinite(ys[0])) ctx.arc(sx(xs[0]), sy(ys[0]), 2, 0, 7);
      ctx.stroke();
    };
    for (const s of this.series) {
      if (this.opts.smoothing > 0) {
        line(s.xs, s.ys, s.color, 0.25, 1);
        line(s.xs, smooth(s.ys, this.opts.smoothing), s.color, 1, 1.6);
      } else {
        line(s.xs, s.ys, s.color, 1, 1.4);
      }
    }
    ctx.globalAlpha = 1;
    if (this.hoverX !== null && this.hoverX !== undefined) {
      ctx.strokeStyle = "#9ca3af";
      ctx.beginPath(); ctx.moveTo(sx(this.hoverX), pad.t); ctx.lineTo(sx(this.hoverX), h - pad.b); ctx.stroke();
    }
    if (this.drag && Math.abs(this.drag.x1 - this.drag.x0) > 3) {
      ctx.fillStyle = "rgba(47,111,222,.12)";
      ctx.fillRect(Math.min(this.drag.x0, this.drag.x1), pad.t, Math.abs(this.drag.x1 - this.drag.x0), h - pad.t - pad.b);
    }
    ctx.restore();
    if (!this.series.length) {
      ctx.fillStyle = "#9ca3af"; ctx.textAlign = "center";
      ctx.fillText("no data", w / 2, h / 2);
    }
  }

  xAt(px) {
    const { e, pad, w } = this.scale;
    return e.x0 + ((px - pad.l) / (w - pad.l - pad.r)) * (e.x1 - e.x0);
  }

  hover(ev) {
    if (!this.scale || !this.series.length) return;
    if (this.drag) { this.drag.x1 = ev.offsetX; this.draw(); return; }
    const x = this.xAt(ev.offsetX);
    const rows = [];
    let snap = null;
    for (const s of this.series) {
      const i = nearest(s.xs, x);
      if (i < 0) continue;
      const ys = this.opts.smoothing > 0 ? smooth(s.ys, this.opts.smoothing) : s.ys;
      if (snap === null || Math.abs(s.xs[i] - x) < Math.abs(snap - x)) snap = s.xs[i];
      rows.push([s, s.xs[i], ys[i]]);
    }
    this.hoverX = snap;
    this.draw();
    const xf = (v) => (this.opts.xKind === "time" ? fmtDuration(v) : fmtNum(v));
    this.tip.replaceChildren();
    const head = document.createElement("div");
    head.textContent = `${this.opts.xKind === "time" ? "time" : "step"} ${xf(snap)}`;
    this.tip.append(head);
    for (const [s, sxv, y] of rows.slice(0, 12)) {
      const d = document.createElement("div");
      const sw = document.createElement("span");
      sw.className = "sw";
      sw.style.background = s.color;
      d.append(sw, `${s.name}: ${fmtNum(y)}` + (sxv !== snap ? ` @${xf(sxv)}` : ""));
      this.tip.append(d);
    }
    this.tip.hidden = false;
    const left = Math.min(ev.offsetX + 14, this.el.clientWidth - this.tip.offsetWidth - 4);
    this.tip.style.left = `${Math.max(0, left)}px`;
    this.tip.style.top = `${ev.offsetY + 10}px`;
  }

  endDrag() {
    if (!this.drag) return;
    const { x0, x1 } = this.drag;
    this.drag = null;
    if (Math.abs(x1 - x0) > 3 && this.scale) {
      const a = this.xAt(Math.min(x0, x1)), b = this.xAt(Math.max(x0, x1));
      this.view = [a, b];
      if (this.onZoom) this.onZoom(this.view);
    }
    this.draw();
  }
}

// Parallel coordinates: one vertical axis per dimension, one polyline per item.
// dims: [{name, values: (number|string|null)[]}]; colorBy: index of the dim that colors lines.
export class ParallelChart {
  constructor(parent, { title = "" } = {}) {
    this.el = document.createElement("div");
    this.el.className = "chart big";
    const t = document.createElement("div");
    t.className = "title";
    t.textContent = title;
    this.canvas = document.createElement("canvas");
    this.canvas.dataset.role = "parallel";
    this.el.append(t, this.canvas);
    parent.append(this.el);
    this.dims = [];
    this.labels = [];
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(this.canvas);
  }

  setData(dims, labels, colorBy = dims.length - 1) {
    this.dims = dims;
    this.labels = labels;
    this.colorBy = colorBy;
    this.canvas.dataset.axes = String(dims.length);
    this.canvas.dataset.lines = String(labels.length);
    this.draw();
  }

  draw() {
    const { ctx, w, h } = setupCanvas(this.canvas);
    if (w === 0 || !this.dims.length) return;
    const pad = { l: 40, r: 40, t: 26, b: 18 };
    const n = this.dims.length;
    const ax = (i) => pad.l + (n === 1 ? 0 : (i / (n - 1)) * (w - pad.l - pad.r));
    // Each axis maps its values to [0, 1]: numbers linearly, text by sorted category.
    const scales = this.dims.map((d) => {
      const nums = d.values.filter((v) => typeof v === "number" && Number.isFinite(v));
      if (nums.length && nums.length === d.values.filter((v) => v !== null && v !== undefined).length) {
        let lo = Math.min(...nums), hi = Math.max(...nums);
        if (lo === hi) { lo -= 1; hi += 1; }
        return { f: (v) => (typeof v === "number" && Number.isFinite(v) ? (v - lo) / (hi - lo) : null), lo, hi, cats: null };
      }
      const cats = [...new Set(d.values.filter((v) => v !== null && v !== undefined).map(String))].sort();
      return { f: (v) => (v === null || v === undefined ? null : cats.length === 1 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1)), cats };
    });
    const py = (u) => h - pad.b - u * (h - pad.t - pad.b);
    const cs = scales[this.colorBy];
    ctx.lineWidth = 1.2;
    for (let k = 0; k < this.labels.length; k++) {
      const cu = cs.f(this.dims[this.colorBy].values[k]);
      // Low values blue, high values red.
      ctx.strokeStyle = cu === null ? "#9ca3af" : `hsl(${(1 - cu) * 230}, 70%, 45%)`;
      ctx.globalAlpha = 0.75;
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < n; i++) {
        const u = scales[i].f(this.dims[i].values[k]);
        if (u === null) { pen = false; continue; }
        if (pen) ctx.lineTo(ax(i), py(u)); else ctx.moveTo(ax(i), py(u));
        pen = true;
      }
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    ctx.font = "11px system-ui, sans-serif";
    for (let i = 0; i < n; i++) {
      const x = ax(i);
      ctx.strokeStyle = "#4b5563";
      ctx.beginPath(); ctx.moveTo(x, pad.t); ctx.lineTo(x, h - pad.b); ctx.stroke();
      ctx.fillStyle = "#111827";
      ctx.textAlign = i === 0 ? "left" : i === n - 1 ? "right" : "center";
      ctx.textBaseline = "bottom";
      ctx.fillText(this.dims[i].name, x, pad.t - 8);
      ctx.fillStyle = "#6b7280";
      ctx.textBaseline = "middle";
      const s = scales[i];
      const marks = s.cats ? s.cats.map((c, j) => [c, s.cats.length === 1 ? 0.5 : j / (s.cats.length - 1)]) : ticks(s.lo, s.hi, 4).map((t) => [fmtNum(t), (t - s.lo) / (s.hi - s.lo)]);
      for (const [label, u] of marks) {
        ctx.fillText(String(label).slice(0, 14), x + (i === n - 1 ? -4 : 4), py(u));
      }
    }
  }
}
