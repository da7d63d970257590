// The UI's shared layer: the language (assets/i18n.json), sign-in (a bearer token kept for the
// browser tab in sessionStorage, sent in a header — never a cookie, so no request can be forged
// from another site), calls to /api/v1, and showing only what the token's role may do.
"use strict";

const ui = {
  dict: null,
  lang: "en",
  token: sessionStorage.getItem("linesight.token") || "",
  role: null,
  name: null,
};
const ROLES = ["viewer", "operator", "admin"];

function lookup(strings, key) {
  return key.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), strings);
}

// The text of `key` in the chosen language, `{name}` placeholders filled from `vars`.
function t(key, vars) {
  let s = lookup(ui.dict && ui.dict[ui.lang], key);
  if (typeof s !== "string") s = lookup(ui.dict && ui.dict.en, key);
  if (typeof s !== "string") s = key;
  for (const [k, v] of Object.entries(vars || {})) s = s.split("{" + k + "}").join(String(v));
  return s;
}

function translate(root) {
  (root || document).querySelectorAll("[data-i18n]").forEach((e) => { e.textContent = t(e.dataset.i18n); });
  (root || document).querySelectorAll("[data-i18n-placeholder]").forEach((e) => { e.placeholder = t(e.dataset.i18nPlaceholder); });
  (root || document).querySelectorAll("[data-i18n-title]").forEach((e) => { e.title = t(e.dataset.i18nTitle); });
  document.documentElement.lang = ui.lang;
  document.title = t("app.title") + " · " + t("nav." + document.body.dataset.page);
}

function can(role) {
  return ui.role !== null && ROLES.indexOf(ui.role) >= ROLES.indexOf(role);
}

function applyRole() {
  document.querySelectorAll("[data-role]").forEach((e) => { e.hidden = !can(e.dataset.role); });
  document.querySelectorAll(".viewer-only").forEach((e) => { e.hidden = can("operator"); });
  const who = document.getElementById("who");
  who.textContent = ui.name ? t("auth.signed_in_as", { name: ui.name, role: t("role." + ui.role) }) : t("auth.anonymous");
  document.getElementById("signin").hidden = Boolean(ui.name);
  document.getElementById("signout").hidden = !ui.name;
}

// Append an option per value (its value and text) to `select`.
function addOptions(select, values) {
  for (const v of values) {
    const o = document.createElement("option");
    o.value = v; o.textContent = v;
    select.appendChild(o);
  }
}

// `rows` ([i18n key, value]) as the terms and definitions of a <dl>; rows without a value are
// left out.
function factList(rows) {
  return rows.filter((r) => r[1] !== null && r[1] !== undefined).flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = t(k);
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  });
}

function showStatus(message, isError) {
  const s = document.getElementById("status");
  s.textContent = message;
  s.classList.toggle("error", Boolean(isError));
}

// Call the API: JSON in and out, the token in the Authorization header. Errors carry the API's
// own message (which names the problem and the fix).
async function api(path, options) {
  const opts = Object.assign({}, options);
  const headers = Object.assign({ Accept: "application/json" }, opts.headers);
  if (ui.token) headers.Authorization = "Bearer " + ui.token;
  if (opts.body !== undefined && typeof opts.body !== "string") {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.body);
  }
  opts.headers = headers;
  const response = await fetch(path, opts);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.error) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function loadSession() {
  const s = await api("/api/v1/session");
  ui.role = s.role;
  ui.name = s.name;
  if (s.token_refused) {
    sessionStorage.removeItem("linesight.token");
    ui.token = "";
  }
  applyRole();
  return s;
}

function wireSignIn(onChange) {
  const dialog = document.getElementById("signin-dialog");
  const error = document.getElementById("signin-error");
  document.getElementById("signin").addEventListener("click", () => { error.textContent = ""; dialog.showModal(); });
  document.getElementById("signin-cancel").addEventListener("click", () => dialog.close());
  document.getElementById("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    ui.token = document.getElementById("token").value.trim();
    const s = await loadSession();
    if (!s.signed_in) {
      error.textContent = t("auth.refused");
      return;
    }
    sessionStorage.setItem("linesight.token", ui.token);
    document.getElementById("token").value = "";
    dialog.close();
    onChange();
  });
  document.getElementById("signout").addEventListener("click", async () => {
    sessionStorage.removeItem("linesight.token");
    ui.token = "";
    await loadSession();
    onChange();
  });
}

// Start a page: language, sign-in, then the page's own `init` (called again after a sign-in
// or a language change, with `again` true).
async function boot(init) {
  ui.dict = await (await fetch("/ui/i18n.json")).json();
  const saved = localStorage.getItem("linesight.lang");
  ui.lang = saved || ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en");
  const select = document.getElementById("lang");
  select.value = ui.lang;
  translate();
  select.addEventListener("change", () => {
    ui.lang = select.value;
    localStorage.setItem("linesight.lang", ui.lang);
    translate();
    applyRole();
    init(true);
  });
  wireSignIn(() => init(true));
  try {
    await loadSession();
  } catch (e) {
    showStatus(t("common.error", { message: e.message }), true);
  }
  if (ui.role === null) showStatus(t("auth.needed"), true);
  init(false);
}
