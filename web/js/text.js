/**
 * Words and numbers as visitors read them, and the one safe way data becomes text.
 *
 * Every string that comes from the network (device names, DNS names, company and city names) is
 * hostile: a visitor chose some of them. They only ever reach the page through `textContent` or
 * d3's `.text()`, never through markup; `clip` additionally removes control and direction-override
 * characters (which could reverse or hide what is read) and caps the length so one long name cannot
 * push the layout around. The pages' own words are in the catalogues (`i18n.js`, `web/i18n/`).
 */

/**
 * Catalogue keys for connections that hide where they go (the server's `hidden` on an org node or
 * a phone's destination): shown as what they are, in the page's words, not as the server's owner.
 */
export const HIDDEN = Object.freeze({
  "private-dns": "sankey.hidden.privateDns",
  vpn: "sankey.hidden.vpn",
  "private-relay": "sankey.hidden.privateRelay",
});

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

let count = new Intl.NumberFormat("en");
let decimal = new Intl.NumberFormat("en", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

/**
 * Write numbers the way `lang` does ("1,234.5" in English, "1.234,5" in German); `i18n.js` calls
 * this on every language switch.
 * @param {string} lang
 */
export function setNumberLocale(lang) {
  count = new Intl.NumberFormat(lang);
  decimal = new Intl.NumberFormat(lang, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
}

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
  const whole = i === 0 || x >= 100;
  return `${whole ? count.format(Math.round(x)) : decimal.format(x)} ${units[i]}`;
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
