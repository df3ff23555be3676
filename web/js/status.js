/**
 * The small status page: is the service up (/healthz), and the totals of the public view
 * (/api/state). Polls instead of streaming: it is a page an operator glances at, and polling keeps
 * it working when the event stream is what is broken. It speaks the language the server put in
 * `<html lang>` (the reader's Accept-Language).
 */

import { language, setLanguage, t } from "./i18n.js";
import { formatBytes, formatCount, setText } from "./text.js";

/** Rows of the table: a total of the public view, its words, how to write it. */
const ROWS = [
  ["devices", "status.row.devices", formatCount],
  ["companies", "status.row.companies", formatCount],
  ["countries", "status.row.countries", formatCount],
  ["trackers", "status.row.trackers", formatCount],
  ["connections", "status.row.connections", formatCount],
  ["flows_open", "status.row.flowsOpen", formatCount],
  ["bytes", "status.row.bytes", formatBytes],
];
/** What /healthz says, in words (anything else is shown as the server wrote it). */
const HEALTH = { ok: "status.health.ok", starting: "status.health.starting" };

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** @param {string} url */
async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  return { status: response.status, body: await response.json().catch(() => null) };
}

function uptime(seconds) {
  const s = Math.floor(Number(seconds) || 0);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? t("status.upHours", { h, m }) : t("status.upMinutes", { m, s: s % 60 });
}

async function refresh() {
  const health = $("health");
  try {
    const { status, body } = await getJSON("/healthz");
    health.dataset.state = status === 200 ? "ok" : "starting";
    const word = body && body.status ? String(body.status) : `HTTP ${status}`;
    setText(health, HEALTH[word] ? t(HEALTH[word]) : word);
    setText($("uptime"), body ? uptime(body.uptime) : "");
  } catch {
    health.dataset.state = "down";
    setText(health, t("status.unreachable"));
    setText($("uptime"), "");
  }
  try {
    const { body } = await getJSON("/api/state");
    const totals = (body && body.view && body.view.totals) || {};
    const rows = ROWS.map(([key, label, format]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = t(label);
      const td = document.createElement("td");
      td.textContent = format(totals[key] || 0);
      td.dataset.key = key;
      tr.append(th, td);
      return tr;
    });
    const seq = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = t("status.row.seq");
    const td = document.createElement("td");
    td.textContent = formatCount(body ? body.seq : 0);
    seq.append(th, td);
    $("totals").replaceChildren(...rows, seq);
  } catch {
    $("totals").replaceChildren();
  }
  setText($("updated"), t("status.lastChecked", { time: new Date().toLocaleTimeString(language()) }));
}

setLanguage(document.documentElement.lang).then(() => {
  refresh();
  setInterval(refresh, 5000);
});
