// Health (/): readiness with its reasons, the line links, latency, records lost, free disk, each
// camera's state and counts, the recipes in force, and the Grafana dashboard when configured.
"use strict";

let healthTimer = null;

async function refreshHealth() {
  try {
    const [health, cams, recipes] = await Promise.all([
      api("/api/v1/health"), api("/api/v1/cameras"), api("/api/v1/recipes"),
    ]);
    const ready = document.getElementById("ready");
    ready.textContent = health.ready ? t("health.ready") : t("health.not_ready");
    ready.className = "big " + (health.ready ? "ready-yes" : "ready-no");
    const reasons = document.getElementById("not-ready");
    reasons.replaceChildren(...health.not_ready.map((r) => { const li = document.createElement("li"); li.textContent = r; return li; }));
    showLinks(health);
    const body = document.querySelector("#cameras tbody");
    body.replaceChildren(...cams.cameras.map((c) => {
      const tr = document.createElement("tr");
      const state = t("health." + c.state) + (c.down_reason ? " (" + c.down_reason + ")" : "");
      for (const v of [c.id, state, c.fps.toFixed(1), c.ok, c.ng, c.failsafe, c.dropped]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      tr.children[1].className = c.state === "up" ? "ready-yes" : "ready-no";
      return tr;
    }));
    const list = document.getElementById("recipes");
    list.replaceChildren(...recipes.recipes.map((r) => {
      const li = document.createElement("li");
      li.textContent = t("health.recipe_on", {
        recipe: r.name, model: r.model.name, cameras: r.cameras.length ? r.cameras.join(", ") : t("health.nowhere"),
      });
      return li;
    }));
    showStatus("");
  } catch (e) {
    showStatus(t("common.error", { message: e.message }), true);
  }
}

function items(id, list) {
  document.getElementById(id).replaceChildren(...list.map(([text, bad]) => {
    const li = document.createElement("li");
    li.textContent = text;
    if (bad !== undefined) li.className = bad ? "ready-no" : "ready-yes";
    return li;
  }));
}

function gib(bytes) { return (bytes / 2 ** 30).toFixed(1); }

function showLinks(h) {
  items("line-links", h.line_links.length
    ? h.line_links.map((l) => [t(l.up ? "health.link_up" : "health.link_down", { adapter: l.adapter }), !l.up])
    : [[t("health.no_line")]]);
  const l = h.latency_ms;
  document.getElementById("latency").textContent = l
    ? t("health.latency_of", { p50: l.p50.toFixed(1), p99: l.p99.toFixed(1), n: l.parts }) : t("health.no_parts");
  const d = h.dropped;
  document.getElementById("drops").textContent = d ? t("health.dropped_of", d) : "—";
  items("disks", h.disks.map((k) => (k.error
    ? [t("health.disk_error", { what: t("health.disk_" + k.what), error: k.error }), true]
    : [t("health.disk_free", { what: t("health.disk_" + k.what), free: gib(k.free_bytes), total: gib(k.total_bytes) }),
      k.free_bytes < 0.05 * k.total_bytes])));
  const grafana = document.getElementById("grafana");
  grafana.hidden = !h.grafana_url;
  if (h.grafana_url) document.getElementById("grafana-link").href = h.grafana_url;
}

boot(() => {
  clearInterval(healthTimer);
  refreshHealth();
  healthTimer = setInterval(refreshHealth, 2000);
});
