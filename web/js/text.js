/**
 * Words and numbers as visitors read them, and the one safe way data becomes text.
 *
 * Every string that comes from the network (device names, DNS names, company and city names) is
 * hostile: a visitor chose some of them. They only ever reach the page through `textContent` or
 * d3's `.text()`, never through markup; `clip` additionally removes control and direction-override
 * characters (which could reverse or hide what is read) and caps the length so one long name cannot
 * push the layout around.
 */

/** Plain-words strings; a twelve-year-old must understand every one. */
export const STRINGS = {
  title: "Who are the phones here talking to?",
  explainer:
    "Every line is data leaving a phone on this Wi-Fi: it goes to a company, whose computers are in a country. Red lines go to trackers.",
  devices: "phones",
  companies: "companies",
  countries: "countries",
  trackers: "trackers",
  columnDevices: "Phones here",
  columnCompanies: "Companies",
  columnCountries: "Countries",
  waiting: "Waiting for phones…",
  waitingMore: "Join this exhibit's Wi-Fi and your phone shows up here.",
  live: "live",
  connecting: "connecting…",
  reconnecting: "reconnecting…",
  widthBytes: "Thicker line = more data",
  widthConnections: "Thicker line = more connections",
  widthConnectionsFallback: "Thicker line = more connections (no data counts yet)",
  legendDevice: "a phone or tablet here",
  legendCompany: "a company",
  legendCountry: "a country",
  legendTracker: "tracker: collects what you do, mostly for ads",
  legendPlace: "where a company's computers are",
  legendHome: "this exhibit",
  tracker: "tracker",
};

/** Shown on every screen that uses the geolocation database (its licence requires it). */
export const DEFAULT_ATTRIBUTION = "IP geolocation by DB-IP.com, CC BY 4.0";

// C0/C1 controls, zero-width and bidi formatting characters, line/paragraph separators.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

/**
 * A data string made fit to show: unsafe characters become "�", long ones end in "…".
 * @param {unknown} value
 * @param {number} [max]
 * @returns {string}
 */
export function clip(value, max = 28) {
  const text = String(value ?? "").replace(UNSAFE, "\ufffd");
  const chars = Array.from(text);
  return chars.length > max ? chars.slice(0, max - 1).join("") + "…" : text;
}

const count = new Intl.NumberFormat("en");

/**
 * A whole number with thousands separators.
 * @param {number} n
 */
export function formatCount(n) {
  return count.format(Math.round(Number(n) || 0));
}

/**
 * Bytes in the units people know from their phone plans (kB, MB, GB; powers of 1000).
 * @param {number} n
 */
export function formatBytes(n) {
  const v = Number(n) || 0;
  const units = ["bytes", "kB", "MB", "GB", "TB"];
  let i = 0;
  let x = v;
  while (x >= 1000 && i < units.length - 1) {
    x /= 1000;
    i += 1;
  }
  const digits = i === 0 || x >= 100 ? 0 : x >= 10 ? 1 : 1;
  return `${x.toFixed(digits)} ${units[i]}`;
}

/**
 * Set an element's text (never markup).
 * @param {Element|null} el
 * @param {unknown} value
 */
export function setText(el, value) {
  if (el && el.textContent !== String(value)) el.textContent = String(value);
}

/**
 * The attribution line for the current view: the server may send its own later
 * (`view.attribution`); until then the DB-IP line is shown.
 * @param {any} view
 */
export function attribution(view) {
  const given = view && typeof view.attribution === "string" ? view.attribution : null;
  return clip(given || DEFAULT_ATTRIBUTION, 160);
}
