// Rejects and review (/review): the review queue (NG, fail-safe and sampled OK parts, nearest
// the threshold first), a large view of the selected part with its overlay, and one tap or key
// to label it; the next part loads at once.
"use strict";

let queue = [];
let current = -1;
let imageUrl = null;

// The filters' choices: cameras, recipes, and the defect classes of the recipes' models.
async function loadFilters() {
  const select = document.getElementById("f-camera");
  if (select.options.length > 1) return;
  const [cams, recipes, stats] = await Promise.all([
    api("/api/v1/cameras"), api("/api/v1/recipes"), api("/api/v1/stats?bucket=day&from=" + (Date.now() - 7 * 86400000)),
  ]);
  addOptions(select, cams.cameras.map((c) => c.id));
  addOptions(document.getElementById("f-recipe"), recipes.recipes.map((r) => r.name));
  addOptions(document.getElementById("f-classes"), stats.classes.map((c) => c.class));
}

async function loadQueue() {
  const camera = document.getElementById("f-camera").value;
  const hours = Number(document.getElementById("f-since").value);
  const from = Date.now() - hours * 3600 * 1000;
  let path = "/api/v1/review/queue?limit=200&from=" + from;
  if (camera) path += "&camera=" + encodeURIComponent(camera);
  for (const [key, id] of [["recipe", "f-recipe"], ["class", "f-class"], ["label", "f-label"]]) {
    const v = document.getElementById(id).value.trim();
    if (v) path += "&" + key + "=" + encodeURIComponent(v);
  }
  try {
    const q = await api(path);
    queue = q.items;
    renderQueue();
    select(queue.length ? 0 : -1);
  } catch (e) {
    showStatus(t("common.error", { message: e.message }), true);
  }
}

function renderQueue() {
  document.getElementById("queue-count").textContent = queue.length ? t("review.count", { n: queue.length }) : t("review.empty");
  const list = document.getElementById("queue");
  list.replaceChildren(...queue.map((item, i) => {
    const li = document.createElement("li");
    li.tabIndex = 0;
    li.dataset.id = item.id;
    li.setAttribute("role", "option");
    li.innerHTML = "";
    const v = document.createElement("strong");
    v.className = "v-" + item.verdict;
    v.textContent = t("verdict." + item.verdict);
    li.append(v, " " + item.camera + " #" + item.seq + (item.image_score === null ? "" : " · " + item.image_score.toFixed(3)));
    li.addEventListener("click", () => select(i));
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") select(i); });
    return li;
  }));
}

async function select(i) {
  current = i;
  document.querySelectorAll("#queue li").forEach((li, k) => li.setAttribute("aria-selected", String(k === i)));
  const section = document.getElementById("item");
  if (i < 0 || i >= queue.length) { section.hidden = true; return; }
  section.hidden = false;
  const item = queue[i];
  section.dataset.id = item.id;
  const facts = document.getElementById("item-facts");
  const rows = [
    ["common.camera", item.camera + " #" + item.seq],
    ["review.verdict", t("verdict." + item.verdict) + (item.failsafe_cause ? " (" + item.failsafe_cause + ")" : "")],
    ["review.recipe", item.recipe || "—"],
    ["review.class", item.classes.length ? item.classes.join(", ") : "—"],
    ["review.labelled", item.label ? t("review.label_" + item.label) : t("review.unlabelled")],
    ["review.captured", item.captured_at],
    ["review.score", item.image_score === null ? "—" : item.image_score.toFixed(4)],
    ["review.threshold", item.threshold === null ? "—" : item.threshold.toFixed(4)],
  ];
  facts.replaceChildren(...factList(rows));
  const img = document.getElementById("item-image");
  if (imageUrl) { URL.revokeObjectURL(imageUrl); imageUrl = null; }
  img.removeAttribute("src");
  img.alt = t("review.no_image");
  const heat = document.getElementById("item-heat");
  heat.hidden = true;
  section.dataset.heat = "none";
  if (item.has_image) {
    const headers = ui.token ? { Authorization: "Bearer " + ui.token } : {};
    const response = await fetch("/api/v1/inspections/" + item.id + "/image?overlay=true", { headers });
    if (response.ok && current === i) {
      imageUrl = URL.createObjectURL(await response.blob());
      img.src = imageUrl;
      img.alt = item.camera + " #" + item.seq;
    }
  }
  if (item.has_heat) {
    const headers = ui.token ? { Authorization: "Bearer " + ui.token } : {};
    const map = await fetch("/api/v1/inspections/" + item.id + "/image?heat=true", { headers });
    if (map.ok && current === i) drawHeat(heat, await createImageBitmap(await map.blob()), section);
  }
}

// Grey level g (128 = the threshold) → colour: clear below 80% of the threshold, then blue
// through yellow to red at 1.5 times it, more opaque as it gets hotter.
function heatColour(g) {
  const x = g / 255;
  if (x < 0.4) return [0, 0, 0, 0];
  const hue = 220 * (1 - Math.min(1, (x - 0.4) / 0.35));
  const f = (n) => {
    const k = (n + hue / 30) % 12;
    return Math.round(255 * (0.5 - 0.5 * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4), Math.round(255 * Math.min(1, 0.3 + 2 * (x - 0.4)))];
}

function drawHeat(canvas, bitmap, section) {
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const cells = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  for (let p = 0; p < cells.data.length; p += 4) {
    const [r, g, b, a] = heatColour(cells.data[p]);
    cells.data[p] = r; cells.data[p + 1] = g; cells.data[p + 2] = b; cells.data[p + 3] = a;
  }
  ctx.putImageData(cells, 0, 0);
  section.dataset.heat = "shown";
  canvas.hidden = !document.getElementById("show-heat").checked;
}

async function label(kind) {
  if (current < 0 || !can("operator")) return;
  const item = queue[current];
  try {
    await api("/api/v1/inspections/" + item.id + "/review", { method: "POST", body: { label: kind } });
    showStatus(t("review.saved", { id: item.id, label: t("review.label_" + kind) }));
    queue.splice(current, 1);
    renderQueue();
    select(Math.min(current, queue.length - 1));
  } catch (e) {
    showStatus(t("common.error", { message: e.message }), true);
  }
}

document.querySelectorAll("[data-label]").forEach((b) => b.addEventListener("click", () => label(b.dataset.label)));
document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, select, dialog")) return;
  const keys = { d: "defect", g: "good", u: "unsure" };
  const k = e.key.toLowerCase();
  if (keys[k]) { e.preventDefault(); label(keys[k]); }
  else if (k === "h") {
    const box = document.getElementById("show-heat");
    box.checked = !box.checked;
    box.dispatchEvent(new Event("change"));
  } else if (k === "j") select(Math.min(current + 1, queue.length - 1));
  else if (k === "k") select(Math.max(current - 1, 0));
});
document.getElementById("show-heat").addEventListener("change", (e) => {
  const section = document.getElementById("item");
  document.getElementById("item-heat").hidden = !(e.target.checked && section.dataset.heat === "shown");
});
document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); loadQueue(); });

boot(async () => {
  try { await loadFilters(); } catch (e) { showStatus(t("common.error", { message: e.message }), true); }
  loadQueue();
});
