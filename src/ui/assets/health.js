// Health (/): readiness with its reasons, each camera's state and counts, the recipes in force.
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

boot(() => {
  clearInterval(healthTimer);
  refreshHealth();
  healthTimer = setInterval(refreshHealth, 2000);
});
