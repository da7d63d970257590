// Operating point (/operating-point): escape and overkill on the reviewed parts of a recipe's
// model across thresholds, the threshold in force on that curve, a slider that shows what
// another threshold would give (rates and counts) before applying it (admin, audited).
"use strict";

let op = null;
let opRecipe = "";

function pct(rate) {
  return rate === null || rate === undefined ? "—" : (100 * rate).toFixed(1) + "%";
}

function counted(rate, n) {
  return rate === null || rate === undefined ? "—" : Math.round(rate * n) + "/" + n + " (" + pct(rate) + ")";
}

async function loadRecipes() {
  const select = document.getElementById("op-recipe");
  const recipes = (await api("/api/v1/recipes")).recipes.filter((r) => r.threshold !== null);
  select.replaceChildren();
  addOptions(select, recipes.map((r) => r.name));
  if (opRecipe && recipes.some((r) => r.name === opRecipe)) select.value = opRecipe;
  opRecipe = select.value;
}

function drawChart() {
  const svg = document.getElementById("op-chart");
  const title = svg.querySelector("title");
  const pts = op.points;
  const ts = pts.map((p) => p.threshold);
  const lo = Math.min(...ts, op.current ? op.current.threshold : Infinity);
  const hi = Math.max(...ts, op.current ? op.current.threshold : -Infinity);
  const x = (t) => 40 + 550 * (hi > lo ? (t - lo) / (hi - lo) : 0.5);
  const y = (r) => 220 - 200 * (r || 0);
  const line = (key, cls) => {
    const pl = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    pl.setAttribute("points", pts.filter((p) => p[key] !== null).map((p) => x(p.threshold) + "," + y(p[key])).join(" "));
    pl.setAttribute("class", cls);
    return pl;
  };
  const marker = (t, cls) => {
    const l = document.createElementNS("http://www.w3.org/2000/svg", "line");
    l.setAttribute("x1", x(t)); l.setAttribute("x2", x(t)); l.setAttribute("y1", 20); l.setAttribute("y2", 220);
    l.setAttribute("class", cls);
    return l;
  };
  const axis = document.createElementNS("http://www.w3.org/2000/svg", "path");
  axis.setAttribute("d", "M40 20 V220 H590");
  axis.setAttribute("class", "axis");
  const text = (x_, y_, anchor, s) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", "text");
    e.setAttribute("x", x_); e.setAttribute("y", y_); e.setAttribute("text-anchor", anchor); e.setAttribute("class", "tick");
    e.textContent = s;
    return e;
  };
  // Rates on the left, thresholds along the bottom (the lowest, the highest, and the axis' name).
  const ticks = [0, 0.5, 1].map((r) => text(34, y(r) + 4, "end", (100 * r) + "%"));
  ticks.push(text(40, 236, "start", lo.toFixed(3)), text(590, 236, "end", hi.toFixed(3)),
    text(315, 236, "middle", t("op.threshold")));
  const children = [title, axis, ...ticks, line("escape_rate", "escape"), line("overkill_rate", "overkill")];
  if (op.current) children.push(marker(op.current.threshold, "current"));
  const chosen = pts[Number(document.getElementById("op-slider").value)];
  if (chosen) children.push(marker(chosen.threshold, "chosen"));
  svg.replaceChildren(...children);
}

function showProjected() {
  const p = op.points[Number(document.getElementById("op-slider").value)];
  if (!p) return;
  document.getElementById("op-projected").textContent = t("op.projected", {
    threshold: p.threshold.toFixed(4), escape: counted(p.escape_rate, op.defects), overkill: counted(p.overkill_rate, op.goods),
  });
  drawChart();
}

async function loadPoint() {
  const section = document.getElementById("op");
  const none = document.getElementById("op-none");
  if (!opRecipe) { section.hidden = true; none.hidden = false; return; }
  try {
    op = await api("/api/v1/operating-point?recipe=" + encodeURIComponent(opRecipe));
  } catch (e) {
    showStatus(t("common.error", { message: e.message }), true);
    return;
  }
  const usable = op.points.length > 0;
  section.hidden = !usable;
  none.hidden = usable;
  if (!usable) return;
  document.getElementById("op-counts").textContent = t("op.counts", { defects: op.defects, goods: op.goods, unsure: op.unsure });
  const c = op.current;
  document.getElementById("op-current").textContent = c
    ? t("op.current", { threshold: c.threshold.toFixed(4), escape: counted(c.escape_rate, op.defects), overkill: counted(c.overkill_rate, op.goods) })
    : "";
  const slider = document.getElementById("op-slider");
  slider.max = String(op.points.length - 1);
  let nearest = 0;
  if (c) op.points.forEach((p, i) => { if (Math.abs(p.threshold - c.threshold) < Math.abs(op.points[nearest].threshold - c.threshold)) nearest = i; });
  slider.value = String(nearest);
  showProjected();
}

async function apply() {
  const p = op && op.points[Number(document.getElementById("op-slider").value)];
  if (!p) return;
  try {
    await api("/api/v1/recipes/" + encodeURIComponent(opRecipe), { method: "PATCH", body: { threshold: p.threshold } });
    showStatus(t("op.applied", { recipe: opRecipe, threshold: p.threshold.toFixed(4) }));
    await loadPoint();
  } catch (e) {
    showStatus(t("common.error", { message: e.message }), true);
  }
}

document.getElementById("op-slider").addEventListener("input", showProjected);
document.getElementById("op-apply").addEventListener("click", apply);
document.getElementById("op-form").addEventListener("submit", (e) => { e.preventDefault(); opRecipe = document.getElementById("op-recipe").value; loadPoint(); });

boot(async () => {
  document.querySelectorAll(".viewer-only-admin").forEach((e) => { e.hidden = can("admin"); });
  try { await loadRecipes(); } catch (e) { showStatus(t("common.error", { message: e.message }), true); }
  loadPoint();
});
