// Rejects and review (/review): the review queue (NG, fail-safe and sampled OK parts, nearest
// the threshold first), a large view of the selected part with its overlay, and one tap or key
// to label it; the next part loads at once.
"use strict";

let queue = [];
let current = -1;
let imageUrl = null;

async function loadCameras() {
  const select = document.getElementById("f-camera");
  if (select.options.length > 1) return;
  const cams = await api("/api/v1/cameras");
  for (const c of cams.cameras) {
    const o = document.createElement("option");
    o.value = c.id; o.textContent = c.id;
    select.appendChild(o);
  }
}

async function loadQueue() {
  const camera = document.getElementById("f-camera").value;
  const hours = Number(document.getElementById("f-since").value);
  const from = Date.now() - hours * 3600 * 1000;
  let path = "/api/v1/review/queue?limit=200&from=" + from;
  if (camera) path += "&camera=" + encodeURIComponent(camera);
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
    ["review.captured", item.captured_at],
    ["review.score", item.image_score === null ? "—" : item.image_score.toFixed(4)],
    ["review.threshold", item.threshold === null ? "—" : item.threshold.toFixed(4)],
  ];
  facts.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = t(k);
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  const img = document.getElementById("item-image");
  if (imageUrl) { URL.revokeObjectURL(imageUrl); imageUrl = null; }
  img.removeAttribute("src");
  img.alt = t("review.no_image");
  if (item.has_image) {
    const headers = ui.token ? { Authorization: "Bearer " + ui.token } : {};
    const response = await fetch("/api/v1/inspections/" + item.id + "/image?overlay=true", { headers });
    if (response.ok && current === i) {
      imageUrl = URL.createObjectURL(await response.blob());
      img.src = imageUrl;
      img.alt = item.camera + " #" + item.seq;
    }
  }
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
  else if (k === "j") select(Math.min(current + 1, queue.length - 1));
  else if (k === "k") select(Math.max(current - 1, 0));
});
document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); loadQueue(); });

boot(async () => {
  try { await loadCameras(); } catch (e) { showStatus(t("common.error", { message: e.message }), true); }
  loadQueue();
});
