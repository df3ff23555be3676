/**
 * The operator console. The session lives in an HttpOnly cookie this script cannot read; the CSRF
 * token comes back in every JSON answer and goes out in `X-CSRF-Token` on every POST. Device labels
 * are whatever the public screen shows (pseudonyms in exhibit mode) and go in with textContent.
 */

const $ = (id) => document.getElementById(id);
let csrf = "";

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
  $("pause").textContent = state.paused ? "Resume the screen" : "Pause the screen";
  $("pause").dataset.paused = state.paused ? "1" : "";
  $("hidden-count").textContent = state.hidden ? `(${state.hidden} hidden)` : "";
  const list = $("devices");
  list.replaceChildren();
  for (const dev of state.devices) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = `${dev.label} (${dev.connections} connections)`;
    const hide = document.createElement("button");
    hide.type = "button";
    hide.textContent = "Hide";
    hide.addEventListener("click", () => act("/api/operator/hide", { device: dev.id }, `${dev.label} hidden`));
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
    say(data.error || `failed (${status})`);
    return;
  }
  render(data);
  if (done) say(done);
}

function loggedOut() {
  $("console").hidden = true;
  $("login").hidden = false;
  say("Please log in again.");
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
  if (!ok) return say(`failed (${status})`);
  const a = document.createElement("a");
  a.href = link.href;
  a.download = "";
  document.body.append(a);
  a.click();
  a.remove();
  say("Download started.");
}

async function refresh() {
  const { ok, data } = await call("/api/operator/state");
  if (ok) render(data);
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const { ok, status, data } = await call("/api/operator/login", { password: $("password").value });
  $("password").value = "";
  if (!ok) {
    say(status === 429 ? "Too many attempts: wait a minute." : data.error || "Login failed.");
    return;
  }
  say("");
  await refresh();
});
$("mode").addEventListener("change", () => act("/api/operator/mode", { mode: $("mode").value }, "Mode changed."));
$("lang").addEventListener("change", () => act("/api/operator/language", { lang: $("lang").value }, "Language changed."));
for (const id of ["layout", "every"]) {
  $(id).addEventListener("change", () => {
    if (!$("layout").value) return; // "as the kiosk's address says" is the state before any choice
    act("/api/operator/layout", { layout: $("layout").value, every: Number($("every").value) }, "Views changed.");
  });
}
$("pause").addEventListener("click", () =>
  act("/api/operator/pause", { paused: !$("pause").dataset.paused }, "Done."),
);
$("reset").addEventListener("click", () => {
  if (window.confirm("Forget every device now?")) act("/api/operator/reset", {}, "Everyone was forgotten.");
});
for (const id of ["summary-csv", "summary-svg"]) $(id).addEventListener("click", download);
$("logout").addEventListener("click", async () => {
  await call("/api/operator/logout", {});
  $("console").hidden = true;
  $("login").hidden = false;
  say("Logged out.");
});

refresh();
setInterval(() => {
  if (!$("console").hidden) refresh();
}, 5000);
