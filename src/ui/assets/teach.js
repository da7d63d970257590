// Teach wizard (/teach): choose a recipe and where its good parts come from (a camera's next
// parts, or the archive's OK parts), optionally the overkill it may cost and a folder of labelled
// defects → the teach job's progress → the figures teach measured →
// run the new model as the recipe's shadow candidate, or activate it → the shadow comparison,
// and promote or stop it. The job's id stays in the address (#job=N), so a reload resumes.
"use strict";

let job = null;
let jobTimer = null;
let compareTimer = null;

function step(name) {
  document.querySelectorAll(".steps li").forEach((li) => {
    if (li.dataset.step === name) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  });
}

// `values` as the options of `select`, keeping the choice if it is still one of them.
function options(select, values) {
  const keep = select.value;
  select.replaceChildren();
  addOptions(select, values);
  if (values.includes(keep)) select.value = keep;
}

function pct(x) { return x === null || x === undefined ? null : (100 * x).toFixed(1) + "%"; }

async function start(e) {
  e.preventDefault();
  const recipe = document.getElementById("t-recipe").value;
  const source = document.querySelector("input[name=source]:checked").value;
  const body = source === "camera"
    ? { recipe, camera: document.getElementById("t-camera").value, parts: Number(document.getElementById("t-parts").value) }
    : { recipe, archived_ok: true };
  // Left empty: the recipe's [recipe.teach] settings.
  const overkill = document.getElementById("t-overkill").value;
  if (overkill !== "") body.max_overkill = Number(overkill) / 100;
  const defects = document.getElementById("t-defects").value.trim();
  if (defects !== "") body.defects = defects;
  try {
    const answer = await api("/api/v1/teach", { method: "POST", body });
    location.hash = "job=" + answer.id;
    follow(answer.id);
  } catch (err) {
    showStatus(t("common.error", { message: err.message }), true);
  }
}

function follow(id) {
  clearInterval(jobTimer);
  document.getElementById("t-form").hidden = true;
  document.getElementById("t-progress").hidden = false;
  step("teach");
  const poll = async () => {
    try {
      job = await api("/api/v1/teach/" + id);
    } catch (err) {
      showStatus(t("common.error", { message: err.message }), true);
      clearInterval(jobTimer);
      return;
    }
    showJob();
  };
  poll();
  jobTimer = setInterval(poll, 1000);
}

function showJob() {
  const bar = document.getElementById("t-bar");
  const state = document.getElementById("t-state");
  const stage = document.getElementById("t-stage");
  stage.textContent = job.stage || "";
  if (job.state === "capturing") {
    bar.max = job.parts; bar.value = job.captured;
    state.textContent = t("teach.capturing", { n: job.captured, parts: job.parts });
  } else if (job.state === "running") {
    bar.removeAttribute("value");
    state.textContent = t("teach.teaching", { s: Math.round(job.elapsed_s || 0) });
  } else if (job.state === "failed") {
    clearInterval(jobTimer);
    bar.max = 1; bar.value = 0;
    state.textContent = t("teach.failed", { error: job.error });
    state.className = "big error";
    document.getElementById("t-form").hidden = !can("admin");
  } else if (job.state === "done") {
    clearInterval(jobTimer);
    bar.max = 1; bar.value = 1;
    state.textContent = t("teach.done");
    showResult();
  }
}

function showResult() {
  step("result");
  const info = job.teach || {};
  const op = info.operating_point || {};
  const search = info.recipe || {};
  document.getElementById("t-result").hidden = false;
  document.getElementById("t-figures").replaceChildren(...factList([
    ["teach.recipe", job.recipe],
    ["teach.images", info.images === undefined ? null : t("teach.images_split", { n: info.images, held: info.holdout_images })],
    ["teach.chosen", search.chosen ? t("teach.chosen_of", { chosen: search.chosen, n: (search.candidates || []).length }) : null],
    ["teach.threshold", job.threshold === undefined ? null : job.threshold.toFixed(4)],
    ["teach.rule", op.rule],
    ["teach.overkill", op.estimated_overkill === undefined ? null
      : t("teach.overkill_of", { rate: pct(op.estimated_overkill), upper: pct(op.estimated_overkill_upper95), n: op.holdout_goods })],
    ["teach.escape_synthetic", pct(op.estimated_escape_synthetic)],
    ["teach.escape_labelled", op.estimated_escape_labelled === undefined || op.estimated_escape_labelled === null ? null
      : t("teach.escape_labelled_of", { rate: pct(op.estimated_escape_labelled), n: op.labelled_defects })],
    ["teach.seconds", info.seconds_total === undefined ? null : info.seconds_total.toFixed(0) + " s"],
  ]));
  document.getElementById("t-warnings").replaceChildren(...(job.warnings || []).map((w) => {
    const li = document.createElement("li"); li.textContent = w; return li;
  }));
  if (job.shadow) watchShadow();
}

async function runShadow() {
  try {
    await api("/api/v1/recipes/" + encodeURIComponent(job.recipe) + "/shadow", { method: "POST", body: { package: job.package } });
    showStatus(t("teach.shadow_started", { recipe: job.recipe }));
    watchShadow();
  } catch (err) {
    showStatus(t("common.error", { message: err.message }), true);
  }
}

async function activate() {
  try {
    await api("/api/v1/recipes/" + encodeURIComponent(job.recipe) + "/model", { method: "POST", body: { package: job.package } });
    showStatus(t("teach.activated", { recipe: job.recipe }));
  } catch (err) {
    showStatus(t("common.error", { message: err.message }), true);
  }
}

function watchShadow() {
  step("shadow");
  document.getElementById("t-compare").hidden = false;
  clearInterval(compareTimer);
  const poll = async () => {
    try {
      showCompare(await api("/api/v1/recipes/" + encodeURIComponent(job.recipe) + "/shadow"));
    } catch (err) {
      showStatus(t("common.error", { message: err.message }), true);
    }
  };
  poll();
  compareTimer = setInterval(poll, 2000);
}

function showCompare(s) {
  const text = document.getElementById("t-compare-state");
  text.dataset.state = s.state;
  text.dataset.parts = s.parts || 0;
  if (s.state === "none") { text.textContent = t("teach.no_shadow"); return; }
  text.textContent = t(s.state === "running" ? "teach.shadow_running" : "teach.shadow_stopped", {
    n: s.parts || 0, agreement: pct(s.agreement) || "—",
  });
  const verdicts = ["OK", "NG", "FAILSAFE"];
  const head = document.createElement("tr");
  head.append(document.createElement("th"), ...verdicts.map((v) => {
    const th = document.createElement("th"); th.textContent = t("verdict." + v); return th;
  }));
  document.querySelector("#t-matrix thead").replaceChildren(head);
  document.querySelector("#t-matrix tbody").replaceChildren(...verdicts.map((live) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th"); th.textContent = t("verdict." + live);
    tr.append(th, ...verdicts.map((cand) => {
      const td = document.createElement("td");
      td.textContent = (s.confusion && s.confusion[live] && s.confusion[live][cand]) || 0;
      return td;
    }));
    return tr;
  }));
  document.getElementById("t-promote").disabled = s.state !== "running";
  document.getElementById("t-stop").disabled = s.state !== "running";
}

async function shadowAction(method, path, message) {
  try {
    await api("/api/v1/recipes/" + encodeURIComponent(job.recipe) + "/shadow" + path, { method });
    showStatus(t(message, { recipe: job.recipe }));
  } catch (err) {
    showStatus(t("common.error", { message: err.message }), true);
  }
}

document.getElementById("t-form").addEventListener("submit", start);
document.getElementById("t-shadow").addEventListener("click", runShadow);
document.getElementById("t-activate").addEventListener("click", activate);
document.getElementById("t-promote").addEventListener("click", () => shadowAction("POST", "/promote", "teach.promoted"));
document.getElementById("t-stop").addEventListener("click", () => shadowAction("DELETE", "", "teach.shadow_stopped_by_you"));
document.querySelectorAll("input[name=source]").forEach((r) => r.addEventListener("change", () => {
  const camera = document.querySelector("input[name=source]:checked").value === "camera";
  document.getElementById("t-camera").disabled = !camera;
  document.getElementById("t-parts").disabled = !camera;
}));

boot(async (again) => {
  document.querySelectorAll(".viewer-only-admin").forEach((e) => { e.hidden = can("admin"); });
  try {
    const [recipes, cams] = await Promise.all([api("/api/v1/recipes"), api("/api/v1/cameras")]);
    options(document.getElementById("t-recipe"), recipes.recipes.map((r) => r.name));
    options(document.getElementById("t-camera"), cams.cameras.map((c) => c.id));
  } catch (err) {
    showStatus(t("common.error", { message: err.message }), true);
  }
  // A job under way or done: the wizard is past its first step.
  if (job || jobTimer) document.getElementById("t-form").hidden = true;
  if (job) { showJob(); return; }
  const m = /job=(\d+)/.exec(location.hash);
  if (m && !again) follow(Number(m[1]));
  else step("parts");
});
