/**
 * The pages' words: one catalogue per language (`web/i18n/<lang>.json`, a flat object of key ->
 * text), fetched from this server (`/static/i18n/`, allowed by the CSP's `connect-src 'self'`).
 *
 * Who picks the language: the kiosk follows the operator (`view.screen.lang`), the phone page
 * follows what the server negotiated from the phone's Accept-Language (`/api/me`'s `lang`). Both
 * call `setLanguage`; elements marked `data-i18n="key"` get the text (`data-i18n-label` an
 * aria-label, `data-i18n-alt` an alt text) and scripts ask `t(key, {n: 3})`.
 *
 * A key missing from a catalogue falls back to English, then to the key itself, so a half-done
 * translation never leaves a hole on screen. Catalogue text is data like any other: it goes in
 * with textContent or an attribute, never as markup.
 */

import { setNumberLocale } from "./text.js";

/** The languages with a catalogue; the server's list (apviz.live.pseudonyms.LANGUAGES) is the same. */
export const LANGUAGES = ["en", "de", "fr"];
const FALLBACK = "en";

/** @type {Map<string, Promise<Record<string, string>>>} */
const catalogues = new Map();
/** @type {Record<string, string>} */
let table = Object.create(null);
/** @type {Record<string, string>} */
let fallback = Object.create(null);
let current = FALLBACK;
let generation = 0;
/** @type {Set<(lang: string) => void>} */
const listeners = new Set();

/**
 * A catalogue as a prototype-free table of non-empty strings (a key such as "__proto__" is just a key).
 * @param {unknown} raw
 */
function toTable(raw) {
  const out = Object.create(null);
  if (raw && typeof raw === "object") {
    for (const [key, value] of Object.entries(raw)) if (typeof value === "string" && value) out[key] = value;
  }
  return out;
}

/** @param {string} lang @returns {Promise<Record<string, string>>} */
function load(lang) {
  let hit = catalogues.get(lang);
  if (!hit) {
    hit = fetch(`/static/i18n/${lang}.json`, { cache: "no-cache" })
      .then((r) => {
        if (!r.ok) throw new Error(`catalogue ${lang}: HTTP ${r.status}`);
        return r.json();
      })
      .then(toTable);
    hit.catch(() => catalogues.delete(lang)); // try again next time
    catalogues.set(lang, hit);
  }
  return hit;
}

/** The language the page speaks now. */
export function language() {
  return current;
}

/**
 * Switch the page to `lang` (an unknown one means English); resolves with the language in use.
 * Calls that overlap end in the last one's language, whatever order the catalogues arrive in.
 * @param {string} lang
 */
export async function setLanguage(lang) {
  const want = LANGUAGES.includes(lang) ? lang : FALLBACK;
  const mine = ++generation;
  const [base, wanted] = await Promise.all([
    load(FALLBACK).catch(() => Object.create(null)),
    want === FALLBACK ? null : load(want).catch(() => null),
  ]);
  if (mine !== generation) return current;
  fallback = base;
  table = wanted || base;
  current = wanted ? want : FALLBACK;
  setNumberLocale(current);
  translatePage();
  for (const fn of listeners) fn(current);
  return current;
}

/**
 * The text for `key` in the page's language; `{name}` placeholders are filled from `params`.
 * @param {string} key
 * @param {Record<string, string|number>} [params]
 */
export function t(key, params) {
  const text = table[key] ?? fallback[key] ?? key;
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/**
 * Put the current language's words into every marked element under `root`.
 * @param {ParentNode} [root]
 */
export function translatePage(root = document) {
  document.documentElement.lang = current;
  for (const el of root.querySelectorAll("[data-i18n]")) {
    const text = t(/** @type {HTMLElement} */ (el).dataset.i18n || "");
    if (el.textContent !== text) el.textContent = text;
  }
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(/** @type {HTMLElement} */ (el).dataset.i18nLabel || ""));
  }
  for (const el of root.querySelectorAll("[data-i18n-alt]")) {
    el.setAttribute("alt", t(/** @type {HTMLElement} */ (el).dataset.i18nAlt || ""));
  }
}

/**
 * Call `fn(lang)` after every language switch (the words are in place by then).
 * @param {(lang: string) => void} fn
 */
export function onLanguage(fn) {
  listeners.add(fn);
}

/**
 * A country's name in the page's language from its ISO code, or `fallback` (the server's name).
 * English keeps the server's name (the geolocation database's own spelling).
 * @param {string|null|undefined} code
 * @param {string} fallbackName
 */
export function countryName(code, fallbackName) {
  if (current === FALLBACK || !code || !/^[A-Z]{2}$/.test(code)) return fallbackName;
  try {
    const name = regionNames().of(code);
    return name && name !== code ? name : fallbackName;
  } catch {
    return fallbackName;
  }
}

/** @type {{lang: string, names: Intl.DisplayNames}|null} */
let regions = null;
function regionNames() {
  if (!regions || regions.lang !== current) {
    regions = { lang: current, names: new Intl.DisplayNames([current], { type: "region" }) };
  }
  return regions.names;
}
