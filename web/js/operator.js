/**
 * The operator console. The session lives in an HttpOnly cookie this script cannot read; the CSRF
 * token comes back in every JSON answer and goes out in `X-CSRF-Token` on every POST. Device labels
 * are whatever the public screen shows (pseudonyms in exhibit mode) and go in with textContent.
 *
 * Language: the server writes its pick from this browser's Accept-Language into `<html lang>`; the
 * console speaks that, whatever language the operator sets for the kiosk. Answers are shown in words
 * chosen here from the HTTP status; the server's own (English) error text only when none fits.
 */

import { setLanguage, t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
let csrf = "";
const ready = setLanguage(document.documentElement.lang);

function say(text) {
  $("message").textContent = text;
}

async function call(path, body) {
  const init = { credentials: "same-origin", headers: { "Content-Type": "application/json" } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["X-CSRF-Token"] = csrf;
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const data = await resp.json().catch(() => ({}));
  if (data.csrf) csrf = data.csrf;
  return { ok: resp.ok, status: resp.status, data };
}

function render(state) {
  $("login").hidden = true;
  $("console").hidden = false;
  $("mode").value = state.mode;
  $("lang").value = state.lang;
  $("layout").value = state.layout || "";
  $("every").value = String(state.rotate_every);
  $("pause").dataset.i18n = state.paused ? "operator.resume" : "operator.pause";
  $("pause").textContent = t($("pause").dataset.i18n);
  $("pause").dataset.paused = state.paused ? "1" : "";
  const blocking = state.blocking || { available: false };
  $("blocking").hidden = !blocking.available;
  /** @type {HTMLInputElement} */ ($("block-allow")).checked = Boolean(blocking.allowed);
  /** @type {HTMLInputElement} */ ($("block-everyone")).checked = Boolean(blocking.everyone);
  /** @type {HTMLInputElement} */ ($("block-everyone")).disabled = !blocking.allowed;
  $("block-status").textContent = blocking.available
    ? t("operator.block.status", { devices: blocking.devices, attempts: blocking.attempts })
    : "";
  $("hidden-count").textContent = state.hidden ? t("operator.hiddenCount", { n: state.hidden }) : "";
  const list = $("devices");
  list.replaceChildren();
  for (const dev of state.devices) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = t("operator.device", { label: dev.label, n: dev.connections });
    const hide = document.createElement("button");
    hide.type = "button";
    hide.textContent = t("operator.hide");
    hide.addEventListener("click", () =>
      act("/api/operator/hide", { device: dev.id }, t("operator.hidden", { label: dev.label })),
    );
    li.append(name, hide);
    list.append(li);
  }
}

async function act(path, body, done) {
  const { ok, status, data } = await call(path, body);
  if (status === 401) {
    loggedOut();
    return;
  }
  if (!ok) {
    if (status === 403) say(t("operator.reload")); // a CSRF token from an older session
    else if (status === 404 && path.endsWith("/hide")) say(t("operator.gone"));
    else say(data.error || t("operator.failed", { status }));
    return;
  }
  render(data);
  if (done) say(done);
}

function loggedOut() {
  $("console").hidden = true;
  $("login").hidden = false;
  say(t("operator.loginAgain"));
}

/**
 * The summary links download straight from the server (Content-Disposition: attachment). A click
 * first checks the session, so an expired one brings back the login form instead of saving an
 * error message as "summary.csv".
 */
async function download(ev) {
  ev.preventDefault();
  const link = ev.currentTarget;
  const { ok, status } = await call("/api/operator/state");
  if (status === 401) return loggedOut();
  if (!ok) return say(t("operator.failed", { status }));
  const a = document.createElement("a");
  a.href = link.href;
  a.download = "";
  document.body.append(a);
  a.click();
  a.remove();
  say(t("operator.downloadStarted"));
}

async function refresh() {
  await ready;
  const { ok, data } = await call("/api/operator/state");
  if (ok) render(data);
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const { ok, status, data } = await call("/api/operator/login", { password: $("password").value });
  $("password").value = "";
  if (!ok) {
    const why = { 429: "operator.tooMany", 403: "operator.wrongPassword" }[status];
    say(why ? t(why) : data.error || t("operator.loginFailed", { status }));
    return;
  }
  say("");
  await refresh();
});
$("mode").addEventListener("change", () =>
  act("/api/operator/mode", { mode: $("mode").value }, t("operator.modeChanged")),
);
$("lang").addEventListener("change", () =>
  act("/api/operator/language", { lang: $("lang").value }, t("operator.languageChanged")),
);
for (const id of ["layout", "every"]) {
  $(id).addEventListener("change", () => {
    if (!$("layout").value) return; // "as the kiosk's address says" is the state before any choice
    act(
      "/api/operator/layout",
      { layout: $("layout").value, every: Number($("every").value) },
      t("operator.viewsChanged"),
    );
  });
}
$("pause").addEventListener("click", () => {
  const paused = !$("pause").dataset.paused;
  act("/api/operator/pause", { paused }, t(paused ? "operator.paused" : "operator.resumed"));
});
/** The tracker-blocking switches: both are sent, so "off" for visitors also ends "for everyone". */
function setBlocking() {
  const allow = /** @type {HTMLInputElement} */ ($("block-allow")).checked;
  const everyone = allow && /** @type {HTMLInputElement} */ ($("block-everyone")).checked;
  act("/api/operator/blocking", { allow, everyone }, t(everyone ? "operator.block.onForAll" : "operator.block.changed"));
}
$("block-allow").addEventListener("change", setBlocking);
$("block-everyone").addEventListener("change", setBlocking);
$("reset").addEventListener("click", () => {
  if (window.confirm(t("operator.confirmReset"))) act("/api/operator/reset", {}, t("operator.resetDone"));
});
for (const id of ["summary-csv", "summary-svg"]) $(id).addEventListener("click", download);
$("logout").addEventListener("click", async () => {
  await call("/api/operator/logout", {});
  $("console").hidden = true;
  $("login").hidden = false;
  say(t("operator.loggedOut"));
});

refresh();
setInterval(() => {
  if (!$("console").hidden) refresh();
}, 5000);
