// Recipes and models (/recipes): each recipe's model (sha, package, when and how it was taught),
// threshold, rules and the cameras running it; run it on one camera or all (operator), roll back to
// the model before, edit its rules (admin); the audit log of every change.
"use strict";

function recipeFacts(r) {
  const m = r.model || {};
  const taught = m.taught;
  const rows = [
    ["recipes.model", m.name],
    ["recipes.sha", m.sha256 ? m.sha256.slice(0, 12) : null],
    ["recipes.package", m.package],
    ["recipes.taught", taught ? t("recipes.taught_at", { at: taught.at ? new Date(taught.at).toLocaleString(ui.lang) : "?", images: taught.images, recipe: taught.recipe || "—" }) : null],
    ["recipes.expected", taught && taught.estimated_overkill !== null && taught.estimated_overkill !== undefined
      ? t("recipes.expected_of", {
        overkill: (100 * taught.estimated_overkill).toFixed(1) + "%",
        escape: taught.estimated_escape_synthetic === null ? "—" : (100 * taught.estimated_escape_synthetic).toFixed(1) + "%",
      }) : null],
    ["recipes.threshold", r.threshold === null ? null : r.threshold.toFixed(4)],
    ["recipes.cameras", r.cameras.length ? r.cameras.join(", ") : t("health.nowhere")],
    ["recipes.rules", r.rules && r.rules.length ? t("recipes.rule_count", { n: r.rules.length }) : t("recipes.no_rules")],
  ];
  return factList(rows);
}

async function change(recipe, path, options, message, vars) {
  try {
    await api("/api/v1/recipes/" + encodeURIComponent(recipe) + path, options);
    showStatus(t(message, Object.assign({ recipe }, vars)));
    await refresh();
  } catch (err) {
    showStatus(t("common.error", { message: err.message }), true);
  }
}

function card(r) {
  const node = document.getElementById("recipe-card").content.firstElementChild.cloneNode(true);
  node.dataset.recipe = r.name;
  node.querySelector(".name").textContent = r.name;
  node.querySelector(".facts").replaceChildren(...recipeFacts(r));
  translate(node);
  const form = node.querySelector(".rules-form");
  const text = node.querySelector(".rules");
  const switchCamera = node.querySelector(".switch-camera");
  addOptions(switchCamera, cameraIds);
  node.querySelector(".activate").addEventListener("click", () => {
    const camera = switchCamera.value;
    const body = camera ? { cameras: [camera] } : undefined;
    change(r.name, "/activate", { method: "POST", body }, camera ? "recipes.activated_on" : "recipes.activated", { camera });
  });
  node.querySelector(".rollback").addEventListener("click", () => change(r.name, "/rollback", { method: "POST" }, "recipes.rolled_back"));
  node.querySelector(".edit-rules").addEventListener("click", () => {
    text.value = JSON.stringify(r.rules || [], null, 2);
    form.hidden = false;
    text.focus();
  });
  node.querySelector(".cancel").addEventListener("click", () => { form.hidden = true; });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    let rules;
    try { rules = JSON.parse(text.value); } catch (err) {
      showStatus(t("recipes.bad_json", { message: err.message }), true);
      return;
    }
    change(r.name, "", { method: "PATCH", body: { rules } }, "recipes.rules_saved");
  });
  return node;
}

// The station's cameras, for switching one camera's recipe.
let cameraIds = [];

async function refresh() {
  try {
    const [recipes, audit, cams] = await Promise.all([api("/api/v1/recipes"), api("/api/v1/audit?limit=50"), api("/api/v1/cameras")]);
    cameraIds = cams.cameras.map((c) => c.id);
    document.getElementById("recipe-list").replaceChildren(...recipes.recipes.map(card));
    applyRole();
    document.querySelector("#audit tbody").replaceChildren(...audit.items.map((a) => {
      const tr = document.createElement("tr");
      for (const v of [new Date(a.at_unix_ms).toLocaleString(ui.lang), a.who, a.action, a.target, a.old, a.new]) {
        const td = document.createElement("td");
        td.textContent = v === null ? "—" : v;
        tr.appendChild(td);
      }
      return tr;
    }));
  } catch (err) {
    showStatus(t("common.error", { message: err.message }), true);
  }
}

boot(() => refresh());
