/**
 * The small status page: is the service up (/healthz), and the totals of the public view
 * (/api/state). Polls instead of streaming: it is a page an operator glances at, and polling keeps
 * it working when the event stream is what is broken.
 */

import { formatBytes, formatCount, setText } from "./text.js";

const ROWS = [
  ["devices", "phones and tablets", formatCount],
  ["companies", "companies", formatCount],
  ["countries", "countries", formatCount],
  ["trackers", "trackers seen", formatCount],
  ["connections", "connections", formatCount],
  ["flows_open", "open connections", formatCount],
  ["bytes", "data", formatBytes],
];

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
  return h ? `up ${h} h ${m} min` : `up ${m} min ${s % 60} s`;
}

async function refresh() {
  const health = $("health");
  try {
    const { status, body } = await getJSON("/healthz");
    health.dataset.state = status === 200 ? "ok" : "starting";
    setText(health, body && body.status ? String(body.status) : `HTTP ${status}`);
    setText($("uptime"), body ? uptime(body.uptime) : "");
  } catch {
    health.dataset.state = "down";
    setText(health, "unreachable");
    setText($("uptime"), "");
  }
  try {
    const { body } = await getJSON("/api/state");
    const totals = (body && body.view && body.view.totals) || {};
    const rows = ROWS.map(([key, label, format]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = label;
      const td = document.createElement("td");
      td.textContent = format(totals[key] || 0);
      td.dataset.key = key;
      tr.append(th, td);
      return tr;
    });
    const seq = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = "updates sent";
    const td = document.createElement("td");
    td.textContent = formatCount(body ? body.seq : 0);
    seq.append(th, td);
    $("totals").replaceChildren(...rows, seq);
  } catch {
    $("totals").replaceChildren();
  }
  setText($("updated"), `Last checked ${new Date().toLocaleTimeString()}.`);
}

refresh();
setInterval(refresh, 5000);
