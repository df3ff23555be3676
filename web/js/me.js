/**
 * The phone page: one device's destinations, from /api/devices/{id}.
 *
 * For now the device is named by the `?device=` (or `?id=`) query parameter; once the server can
 * tell which device is asking, the same page will work without it. It refreshes every few seconds
 * and, like every page here, puts data on screen only as text (a DNS name is whatever the phone, or
 * an app on it, asked for).
 */

import { clip, DEFAULT_ATTRIBUTION, formatBytes, formatCount, setText } from "./text.js";

const REFRESH_MS = 5000;
const MAX_ROWS = 100;

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const params = new URLSearchParams(location.search);
const deviceId = params.get("device") || params.get("id") || "";

/** @param {string} text */
function message(text) {
  const el = $("message");
  el.hidden = !text;
  setText(el, text);
}

async function refresh() {
  if (!deviceId) {
    message("Open this page from the QR code on the exhibit's screen.");
    return;
  }
  let response;
  try {
    response = await fetch(`/api/devices/${encodeURIComponent(deviceId)}`, { cache: "no-store" });
  } catch {
    message("Can't reach the exhibit right now. Trying again…");
    return;
  }
  if (response.status === 404) {
    $("summary").hidden = true;
    $("destinations").replaceChildren();
    message("We can't see this phone any more: it may have left the Wi-Fi.");
    return;
  }
  if (!response.ok) {
    message(`The exhibit answered with an error (${response.status}). Trying again…`);
    return;
  }
  render(await response.json());
}

/** @param {any} detail */
function render(detail) {
  message("");
  $("summary").hidden = false;
  setText($("device-label"), clip(detail.label, 40));
  const dests = Array.isArray(detail.destinations) ? detail.destinations : [];
  const orgs = new Set(dests.map((d) => d.org));
  const countries = new Set(dests.map((d) => d.country).filter(Boolean));
  const trackers = new Set(dests.filter((d) => d.tracker).map((d) => d.org));
  setText($("fig-companies"), formatCount(orgs.size));
  setText($("fig-countries"), formatCount(countries.size));
  setText($("fig-trackers"), formatCount(trackers.size));
  setText($("fig-bytes"), formatBytes(detail.bytes));
  setText($("attribution"), clip(detail.attribution || DEFAULT_ATTRIBUTION, 160));

  // Rebuilt from scratch each time (at most MAX_ROWS rows): simple, and no old row survives.
  const rows = dests.slice(0, MAX_ROWS).map((d) => row(d));
  if (!rows.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "Nothing yet. Open an app or a website and watch this list.";
    rows.push(li);
  }
  $("destinations").replaceChildren(...rows);
}

/** One destination as a list item, built with textContent only. @param {any} d */
function row(d) {
  const li = document.createElement("li");
  if (d.tracker) li.classList.add("is-tracker");
  const head = document.createElement("div");
  head.className = "head";
  const org = document.createElement("span");
  org.className = "org";
  org.textContent = clip(d.org, 32);
  head.append(org);
  if (d.tracker) {
    const badge = document.createElement("span");
    badge.className = "tracker-badge";
    badge.textContent = "⚠ tracker";
    head.append(badge);
  }
  const amount = document.createElement("span");
  amount.className = "amount";
  amount.textContent = formatBytes(d.bytes);
  head.append(amount);
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = clip(d.name || d.domain || "(no name)", 64);
  const where = document.createElement("div");
  where.className = "where";
  where.textContent = clip([d.city, d.country_name || d.country].filter(Boolean).join(", ") || "somewhere unknown", 48);
  li.append(head, name, where);
  return li;
}

refresh();
setInterval(refresh, REFRESH_MS);
