/**
 * The phone page: this phone's own companies, trackers, countries and data, and nobody else's.
 *
 * The page never says which device it is: the server recognises the phone by the address its
 * request comes from (`/api/me`), so the page works when opened from a QR code, and a link copied
 * to someone else's phone shows that phone instead. Updates come from `/api/me/events` (one
 * `detail` message whenever this phone's traffic changes); when the stream cannot be had (not a
 * device here yet, too many tabs, the exhibit restarting) the page asks `/api/me` again every
 * few seconds and reopens the stream once it answers.
 *
 * Like every page here it puts data on screen only as text: a DNS name is whatever the phone, or
 * an app on it, asked for, and the device name is whatever the phone called itself.
 *
 * Language: every answer of `/api/me` carries `lang`, the server's pick from the phone's
 * Accept-Language; the page loads that catalogue. The pseudonym ("Yellow Fox") comes in the kiosk's
 * language whatever the page speaks: the visitor must find the very same words on the big screen.
 *
 * Where each name came from (`name_sources`: seen in the connection, looked up, looked up from another
 * resolver, the provider's front, another device's lookup) is said under the company, so a visitor
 * can tell a name their phone wrote from one the exhibit borrowed. Connections that hide where they
 * go (private DNS, a VPN, Apple's relay) come with one sentence each on what that means and how to
 * see the names, and a phone whose strict private DNS the network refused is told why names are missing.
 *
 * Tapping a company that has a card (`company` on a destination, `/api/cards/{lang}`) opens what it
 * does, why it wants data, where it is based and who owns it, in the page's language; a company
 * without a card has no button, so no text is invented for it.
 *
 * "Forget me now" POSTs `/api/me/forget` (same origin: the browser sends Origin) and then shows a
 * confirmation instead of the list: the phone keeps talking, and the page must not fill in again
 * as if nothing happened.
 */

import { card, cardNodes, loadCards } from "./cards.js";
import { deviceClass } from "./colours.js";
import { countryName, language, setLanguage, t } from "./i18n.js";
import { clip, DEFAULT_ATTRIBUTION, formatBytes, formatCount, HIDDEN, setText } from "./text.js";

const RETRY_MS = 5000;
const MAX_COMPANIES = 40;
const MAX_NAMES = 3;

/** Where a name came from, most trusted first (the server's `name_sources` values). */
const SOURCES = {
  connection: "me.source.connection",
  asked: "me.source.asked",
  resolver: "me.source.resolver",
  front: "me.source.front",
  shared: "me.source.shared",
};
/** One sentence per kind of hidden connection: what it means and how to see the names. */
const HIDDEN_NOTES = {
  "private-dns": "me.hidden.privateDns",
  vpn: "me.hidden.vpn",
  "private-relay": "me.hidden.privateRelay",
};

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * @typedef {{name: string|null, org: string, domain: string|null, country: string|null,
 *            country_name: string|null, city: string|null, tracker: string|null, bytes: number,
 *            connections: number, open: number, hidden?: string|null, name_sources?: string[]}} Destination
 * @typedef {{id: string, label: string, bytes: number, connections: number, trackers: number,
 *            destinations: Destination[], attribution?: string, private_dns_refused?: boolean}} Detail
 * @typedef {{org: string, tracker: boolean, bytes: number, connections: number, hidden: string|null,
 *            company: string|null, names: Map<string, number>, places: Map<string, number>,
 *            sources: Set<string>}} Company
 */

/** @type {EventSource|null} */
let source = null;
/** Companies whose card the visitor opened (by company id), kept across redraws. */
const openCards = new Set();
/** @type {Detail|null} the last detail drawn, redrawn when the cards of a language arrive */
let lastDetail = null;
let timer = 0;
let forgotten = false;
/** The live line's state and catalogue key, kept so a language switch can redraw it. */
let liveKey = "me.connecting";

/** @param {string} text */
function message(text) {
  const el = $("message");
  el.hidden = !text;
  setText(el, text);
}

/** @param {"connecting"|"live"|"waiting"} state @param {string} key catalogue key of the text */
function status(state, key) {
  const el = $("live");
  el.dataset.state = state;
  liveKey = key;
  setText(el, t(key));
}

// English is fetched at once, beside the first /api/me, so even "can't reach the exhibit" has words.
const english = setLanguage("en");

/**
 * Speak the language the server chose for this phone (once it differs from the current one).
 * @param {unknown} lang
 */
async function follow(lang) {
  await english;
  if (typeof lang === "string" && lang !== language()) {
    await setLanguage(lang);
    setText($("live"), t(liveKey));
  }
  const want = language();
  loadCards(want).then(() => {
    if (lastDetail && language() === want) render(lastDetail);
  });
}

function clearDetail() {
  $("summary").hidden = true;
  $("notes").replaceChildren();
  $("companies").replaceChildren();
  $("countries").replaceChildren();
}

/** Ask once; on success show it and switch to the stream, otherwise try again later. */
async function poll() {
  clearTimeout(timer);
  if (forgotten) return;
  let response;
  try {
    response = await fetch("/api/me", { cache: "no-store" });
  } catch {
    await english;
    status("waiting", "me.unreachable");
    retry();
    return;
  }
  /** @type {any} */
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: a proxy's error page; the status says enough */
  }
  await follow(body && body.lang);
  if (forgotten) return;
  if (response.ok && body) {
    render(body);
    openStream();
    return;
  }
  if (response.status === 404) {
    clearDetail();
    message(t("me.notDevice"));
  } else {
    message(t("me.serverError", { status: response.status }));
  }
  status("waiting", "me.checkingAgain");
  retry();
}

function retry() {
  clearTimeout(timer);
  timer = setTimeout(poll, RETRY_MS);
}

function openStream() {
  if (source) source.close();
  const es = new EventSource("/api/me/events");
  source = es;
  es.addEventListener("open", () => status("live", "me.live"));
  es.addEventListener("detail", (ev) => {
    if (forgotten) return;
    render(JSON.parse(/** @type {MessageEvent} */ (ev).data));
    status("live", "me.live");
  });
  es.addEventListener("gone", () => {
    es.close();
    source = null;
    if (forgotten) return;
    clearDetail();
    message(t("me.gone"));
    retry();
  });
  es.addEventListener("error", () => {
    if (es !== source) return;
    // CONNECTING: the browser retries by itself. CLOSED: refused (404, 429): fall back to asking.
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      source = null;
      status("waiting", "me.reconnecting");
      retry();
    } else {
      status("connecting", "me.reconnecting");
    }
  });
}

/**
 * The destinations folded into companies, biggest first.
 * @param {Destination[]} dests
 * @returns {Company[]}
 */
export function companies(dests) {
  /** @type {Map<string, Company>} */
  const byOrg = new Map();
  for (const d of dests) {
    const key = String(d.org ?? "unknown");
    let c = byOrg.get(key);
    if (!c) {
      c = { org: key, tracker: false, bytes: 0, connections: 0, hidden: null, company: null, names: new Map(), places: new Map(), sources: new Set() };
      byOrg.set(key, c);
    }
    if (!c.company && typeof d.company === "string" && d.company) c.company = d.company;
    if (typeof d.hidden === "string" && Object.hasOwn(HIDDEN, d.hidden)) c.hidden = d.hidden;
    for (const s of Array.isArray(d.name_sources) ? d.name_sources : []) {
      if (Object.hasOwn(SOURCES, s)) c.sources.add(s);
    }
    c.tracker = c.tracker || Boolean(d.tracker);
    c.bytes += Number(d.bytes) || 0;
    c.connections += Number(d.connections) || 0;
    const name = d.name || d.domain;
    if (name) c.names.set(name, (c.names.get(name) || 0) + (Number(d.bytes) || 0) + 1);
    const country = d.country_name || d.country ? countryName(d.country, String(d.country_name || d.country)) : "";
    const place = [d.city, country].filter(Boolean).join(", ");
    if (place) c.places.set(place, (c.places.get(place) || 0) + (Number(d.bytes) || 0) + 1);
  }
  return [...byOrg.values()].sort((a, b) => b.bytes - a.bytes || b.connections - a.connections || (a.org < b.org ? -1 : 1));
}

/**
 * The destinations folded into countries, biggest first (`known: false` for no country).
 * @param {Destination[]} dests
 * @returns {{name: string, known: boolean, bytes: number, orgs: Set<string>}[]}
 */
export function countries(dests) {
  /** @type {Map<string, {name: string, known: boolean, bytes: number, orgs: Set<string>}>} */
  const byCountry = new Map();
  for (const d of dests) {
    const known = Boolean(d.country_name || d.country);
    const name = known ? countryName(d.country, String(d.country_name || d.country)) : t("me.somewhereUnknown");
    let c = byCountry.get(name);
    if (!c) {
      c = { name, known, bytes: 0, orgs: new Set() };
      byCountry.set(name, c);
    }
    c.bytes += Number(d.bytes) || 0;
    c.orgs.add(String(d.org ?? "unknown"));
  }
  return [...byCountry.values()].sort((a, b) => b.bytes - a.bytes || b.orgs.size - a.orgs.size || (a.name < b.name ? -1 : 1));
}

/** @param {Detail} detail */
function render(detail) {
  if (forgotten) return;
  lastDetail = detail;
  message("");
  $("summary").hidden = false;
  const you = $("you");
  for (const cls of [...you.classList]) if (cls.startsWith("dev-c")) you.classList.remove(cls);
  you.classList.add(deviceClass(detail.id, detail.colour));
  setText($("device-label"), clip(detail.label, 40));

  const dests = Array.isArray(detail.destinations) ? detail.destinations : [];
  const orgs = companies(dests);
  const places = countries(dests);
  setText($("fig-companies"), formatCount(orgs.length));
  setText($("fig-countries"), formatCount(places.filter((p) => p.known).length));
  setText($("fig-trackers"), formatCount(orgs.filter((c) => c.tracker).length));
  setText($("fig-bytes"), formatBytes(detail.bytes));
  setText($("attribution"), clip(detail.attribution || DEFAULT_ATTRIBUTION, 160));

  // Rebuilt from scratch each time (bounded by MAX_COMPANIES): simple, and no old row survives.
  const rows = orgs.slice(0, MAX_COMPANIES).map(companyRow);
  if (!rows.length) rows.push(none(t("me.nothingYet")));
  $("companies").replaceChildren(...rows);
  const crows = places.map(countryRow);
  if (!crows.length) crows.push(none(t("me.noCountries")));
  $("countries").replaceChildren(...crows);
  $("notes").replaceChildren(...notes(orgs, Boolean(detail.private_dns_refused)));
  renderBlocking(detail.blocking);
}

/**
 * "Block trackers on my phone": shown only while the operator allows it (or has it on for everyone,
 * when the phone is blocking without asking); the count says what the gateway refused.
 * @param {{available: boolean, allowed: boolean, on: boolean, attempts: number, trackers: number}|undefined} b
 */
function renderBlocking(b) {
  const section = $("block");
  section.hidden = !b || !b.available || (!b.allowed && !b.on);
  if (section.hidden || !b) return;
  const button = /** @type {HTMLButtonElement} */ ($("block-button"));
  button.dataset.on = b.on ? "1" : "";
  button.disabled = !b.allowed;
  setText(button, t(b.on ? "me.block.stop" : "me.block.button"));
  setText(
    $("block-count"),
    b.on || b.attempts ? countText(b.attempts, b.trackers) : "",
  );
}

/** "12 attempts to 5 trackers blocked", with the singular forms the catalogue has for one. */
function countText(attempts, trackers) {
  const vars = { attempts: formatCount(attempts), trackers: formatCount(trackers) };
  if (attempts === 1 && trackers <= 1) return t("me.block.countOne", vars);
  if (trackers === 1) return t("me.block.countOneTracker", vars);
  return t("me.block.count", vars);
}

async function toggleBlocking() {
  const button = /** @type {HTMLButtonElement} */ ($("block-button"));
  const on = !button.dataset.on;
  button.disabled = true;
  try {
    const response = await fetch("/api/me/block", {
      method: "POST",
      cache: "no-store",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ on }),
    });
    if (response.ok) {
      const b = await response.json();
      renderBlocking({ ...b, available: true });
    } else {
      setText($("block-count"), t("me.block.failed", { status: response.status }));
    }
  } catch {
    setText($("block-count"), t("me.block.failed", { status: "—" }));
  } finally {
    button.disabled = false;
  }
}

/**
 * One sentence per kind of hidden connection the phone has, and one if its private DNS was refused.
 * @param {Company[]} orgs @param {boolean} refused
 */
function notes(orgs, refused) {
  const kinds = new Set(orgs.map((c) => c.hidden).filter(Boolean));
  const out = [];
  if (refused) out.push(el("p", "note refused", t("me.refused")));
  for (const kind of Object.keys(HIDDEN_NOTES)) {
    if (kinds.has(kind)) out.push(el("p", "note", t(HIDDEN_NOTES[kind])));
  }
  return out;
}

/** The words for where a company's names came from, most trusted first. @param {Set<string>} sources */
function sourceWords(sources) {
  return Object.keys(SOURCES)
    .filter((s) => sources.has(s))
    .map((s) => t(SOURCES[s]));
}

/** @param {string} text */
function none(text) {
  const li = document.createElement("li");
  li.className = "none";
  li.textContent = text;
  return li;
}

/**
 * @param {string} tag @param {string} className @param {string} text
 * @returns {HTMLElement}
 */
function el(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

/** @param {Map<string, number>} m @returns {string[]} keys, biggest first */
function ranked(m) {
  return [...m.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([k]) => k);
}

/** One company as a list item, built with textContent only. @param {Company} c */
function companyRow(c) {
  const li = document.createElement("li");
  if (c.tracker) li.classList.add("is-tracker");
  const head = el("div", "head", "");
  head.append(el("span", "org", c.hidden ? t(HIDDEN[c.hidden]) : clip(c.org, 32)));
  if (c.tracker) head.append(el("span", "tracker-badge", t("me.trackerBadge")));
  head.append(el("span", "amount", formatBytes(c.bytes)));
  const names = ranked(c.names);
  const shown = names.slice(0, MAX_NAMES).map((n) => clip(n, 64));
  if (names.length > MAX_NAMES) shown.push(t("me.andMore", { n: formatCount(names.length - MAX_NAMES) }));
  const where = ranked(c.places).slice(0, 2);
  li.append(
    head,
    el("div", "name", shown.join(" · ") || t("me.noName")),
    el("div", "where", clip(where.join(" · ") || t("me.somewhereUnknown"), 64)),
  );
  const words = sourceWords(c.sources);
  if (words.length) {
    const source = el("div", c.sources.has("shared") ? "source shared" : "source", `${t("me.source.head")} ${words.join(" · ")}`);
    li.append(source);
  }
  const info = c.hidden ? null : card(c.company, language());
  if (info && c.company) {
    const id = c.company;
    const open = openCards.has(id);
    const button = /** @type {HTMLButtonElement} */ (el("button", "card-toggle", t(open ? "me.card.hide" : "me.card.show")));
    button.type = "button";
    button.setAttribute("aria-expanded", String(open));
    button.dataset.company = id;
    button.addEventListener("click", () => {
      if (openCards.has(id)) openCards.delete(id);
      else openCards.add(id);
      if (lastDetail) render(lastDetail);
    });
    li.append(button);
    if (open) {
      const box = el("div", "card", "");
      box.dataset.company = id;
      box.append(...cardNodes(info, c.org, "h3"));
      li.append(box);
    }
  }
  return li;
}

/** @param {{name: string, known: boolean, bytes: number, orgs: Set<string>}} c */
function countryRow(c) {
  const li = document.createElement("li");
  li.append(
    el("span", "country", clip(c.name, 32)),
    el("span", "orgs", c.orgs.size === 1 ? t("me.oneCompany") : t("me.manyCompanies", { n: formatCount(c.orgs.size) })),
    el("span", "amount", formatBytes(c.bytes)),
  );
  return li;
}

/** Take this phone off the screen now; on success the page shows only the confirmation. */
async function forgetMe() {
  const button = /** @type {HTMLButtonElement} */ ($("forget-button"));
  button.disabled = true;
  setText(button, t("me.forget.working"));
  let response = null;
  try {
    response = await fetch("/api/me/forget", { method: "POST", cache: "no-store", credentials: "same-origin" });
  } catch {
    /* shown below as a failure */
  }
  if (response && response.ok) {
    forgotten = true;
    clearTimeout(timer);
    if (source) source.close();
    source = null;
    clearDetail();
    message("");
    $("forgotten").hidden = false;
    $("live").hidden = true;
    return;
  }
  button.disabled = false;
  setText(button, t("me.forget.button"));
  let error = $("forget").querySelector(".forget-error");
  if (!error) {
    error = el("p", "forget-error", "");
    error.setAttribute("role", "alert");
    $("forget").append(error);
  }
  setText(error, t("me.forget.failed", { status: response ? response.status : "—" }));
}

$("forget-button").addEventListener("click", forgetMe);
$("block-button").addEventListener("click", toggleBlocking);
poll();
