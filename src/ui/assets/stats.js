// Statistics (/stats): yield, NG and fail-safe rates over time, the Pareto of defect classes for
// the period, per period (e.g. per shift) and per camera, drawn as SVG in the page from
// /api/v1/stats; CSV export of the same figures.
"use strict";

let stats = null;
const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function pct(x) { return x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%"; }

function window_() {
  const hours = Number(document.getElementById("s-window").value);
  const to = Date.now();
  return { from: to - hours * 3600 * 1000, to };
}

function query(camera) {
  const w = window_();
  let q = "/api/v1/stats?from=" + w.from + "&to=" + w.to + "&bucket=" + document.getElementById("s-bucket").value;
  if (camera) q += "&camera=" + encodeURIComponent(camera);
  return q;
}

function label(start) {
  const d = new Date(start);
  const bucket = document.getElementById("s-bucket").value;
  return bucket === "day" ? d.toLocaleDateString(ui.lang) : d.toLocaleString(ui.lang, { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function drawTrend() {
  const svg = document.getElementById("s-trend");
  const title = svg.querySelector("title");
  const b = stats.buckets;
  const x0 = 50, x1 = 620, y0 = 220, y1 = 20;
  const x = (i) => (b.length > 1 ? x0 + (x1 - x0) * i / (b.length - 1) : (x0 + x1) / 2);
  const y = (r) => y0 - (y0 - y1) * (r || 0);
  const children = [title];
  for (const r of [0, 0.25, 0.5, 0.75, 1]) {
    children.push(el("line", { x1: x0, x2: x1, y1: y(r), y2: y(r), class: "grid" }));
    children.push(el("text", { x: x0 - 6, y: y(r) + 4, "text-anchor": "end", class: "tick" }, (100 * r) + "%"));
  }
  const ticks = b.length > 1 ? [0, Math.floor((b.length - 1) / 2), b.length - 1] : [0];
  for (const i of new Set(ticks)) {
    const anchor = b.length === 1 ? "middle" : i === 0 ? "start" : i === b.length - 1 ? "end" : "middle";
    if (b[i]) children.push(el("text", { x: x(i), y: y0 + 20, "text-anchor": anchor, class: "tick" }, label(b[i].start_unix_ms)));
  }
  for (const [key, cls] of [["yield", "yield"], ["ng_rate", "ng"], ["failsafe_rate", "failsafe"]]) {
    const pts = b.map((p, i) => x(i) + "," + y(p[key])).join(" ");
    children.push(el("polyline", { points: pts, class: cls }));
    if (b.length === 1) children.push(el("circle", { cx: x(0), cy: y(b[0][key]), r: 4, class: cls }));
  }
  svg.replaceChildren(...children);
}

function drawPareto() {
  const svg = document.getElementById("s-pareto");
  const title = svg.querySelector("title");
  const classes = stats.classes;
  document.getElementById("s-no-defects").hidden = classes.length > 0;
  const total = classes.reduce((n, c) => n + c.defects, 0);
  const max = Math.max(1, ...classes.map((c) => c.defects));
  const row = 28;
  svg.setAttribute("viewBox", "0 0 640 " + Math.max(40, classes.length * row + 10));
  const children = [title];
  let cumulative = 0;
  classes.forEach((c, i) => {
    cumulative += c.defects;
    const yy = 5 + i * row;
    children.push(el("text", { x: 150, y: yy + 17, "text-anchor": "end", class: "tick" }, c.class));
    children.push(el("rect", { x: 158, y: yy + 3, height: row - 8, width: Math.max(1, 360 * c.defects / max), class: "bar" }));
    children.push(el("text", { x: 164 + 360 * c.defects / max, y: yy + 17, class: "tick" },
      t("stats.pareto_row", { n: c.defects, cumulative: pct(cumulative / total) })));
  });
  svg.replaceChildren(...children);
}

function table(id, head, rows) {
  const tr = document.createElement("tr");
  tr.append(...head.map((h) => { const th = document.createElement("th"); th.textContent = h; return th; }));
  document.querySelector("#" + id + " thead").replaceChildren(tr);
  document.querySelector("#" + id + " tbody").replaceChildren(...rows.map((r) => {
    const row = document.createElement("tr");
    row.append(...r.map((v) => { const td = document.createElement("td"); td.textContent = v; return td; }));
    return row;
  }));
}

function topClasses(list) {
  return list.length ? list.slice(0, 3).map((c) => c.class + " " + c.defects).join(", ") : "—";
}

async function refresh() {
  const camera = document.getElementById("s-camera").value;
  try {
    stats = await api(query(camera));
  } catch (err) {
    showStatus(t("common.error", { message: err.message }), true);
    return;
  }
  showStatus("");
  const n = stats.totals;
  document.getElementById("s-totals").textContent = t("stats.totals", {
    n: n.inspections, yield: pct(n.yield), ng: pct(n.ng_rate), failsafe: pct(n.failsafe_rate),
  });
  drawTrend();
  drawPareto();
  table("s-buckets", [t("stats.period"), t("stats.inspections"), t("stats.yield"), t("stats.ng_rate"), t("stats.top_classes")],
    stats.buckets.map((b) => [label(b.start_unix_ms), b.inspections, pct(b.yield), pct(b.ng_rate), topClasses(b.classes)]));
  const cams = Array.from(document.getElementById("s-camera").options).map((o) => o.value).filter(Boolean);
  const per = await Promise.all(cams.map((c) => api(query(c)).catch(() => null)));
  table("s-cameras", [t("common.camera"), t("stats.inspections"), t("stats.yield"), t("stats.ng_rate"), t("stats.top_classes")],
    cams.map((c, i) => (per[i] ? [c, per[i].totals.inspections, pct(per[i].totals.yield), pct(per[i].totals.ng_rate), topClasses(per[i].classes)] : [c, "—", "—", "—", "—"])));
}

// The period's figures as CSV: one row per period, a column per defect class (its defect count).
function statsCsv() {
  const classes = stats.classes.map((c) => c.class);
  const quote = (v) => (/[",\n]/.test(String(v)) ? "\"" + String(v).replace(/"/g, "\"\"") + "\"" : String(v));
  const lines = [["start", "camera", "inspections", "ok", "ng", "failsafe", "yield", "ng_rate", "failsafe_rate", ...classes].map(quote).join(",")];
  for (const b of stats.buckets) {
    const per = Object.fromEntries(b.classes.map((c) => [c.class, c.defects]));
    lines.push([b.start, stats.camera || "", b.inspections, b.ok, b.ng, b.failsafe, b.yield, b.ng_rate, b.failsafe_rate,
      ...classes.map((c) => per[c] || 0)].map(quote).join(","));
  }
  return lines.join("\n") + "\n";
}

function csv() {
  if (!stats) return;
  const blob = new Blob([statsCsv()], { type: "text/csv" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "linesight-stats-" + stats.bucket + ".csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

document.getElementById("s-form").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
document.getElementById("s-csv").addEventListener("click", csv);

boot(async () => {
  const select = document.getElementById("s-camera");
  if (select.options.length === 1) {
    try {
      addOptions(select, (await api("/api/v1/cameras")).cameras.map((c) => c.id));
    } catch (err) {
      showStatus(t("common.error", { message: err.message }), true);
    }
  }
  refresh();
});
