/**
 * Company cards: what a company does, why it wants data, where it is based, who owns it.
 *
 * The server sends all cards of one language at once (`/api/cards/{lang}`, a few tens of KB); a
 * company node or a phone's destination carries the overlay's company id (`company`), and that id
 * finds the card. A company without a card (or a language whose cards did not load) gets `null`:
 * the pages then show nothing rather than invent. The texts are data and reach the page only
 * through `textContent`, like every other string here.
 */

import { t } from "./i18n.js";
import { clip } from "./text.js";

/** @typedef {{name?: string, does: string, data: string, based: string, owner: string}} Card */

/** @type {Map<string, Promise<Record<string, Card>>>} language -> its cards (fetched once) */
const loaded = new Map();
/** @type {Record<string, Record<string, Card>>} the languages that have arrived */
const ready = {};

/**
 * Fetch the cards of `lang` (once); resolves when they are usable through `card()`.
 * @param {string} lang
 * @returns {Promise<Record<string, Card>>}
 */
export function loadCards(lang) {
  let hit = loaded.get(lang);
  if (!hit) {
    hit = fetch(`/api/cards/${encodeURIComponent(lang)}`, { cache: "default" })
      .then((r) => (r.ok ? r.json() : { cards: {} }))
      .then((body) => {
        const cards = body && typeof body.cards === "object" && body.cards ? body.cards : {};
        ready[lang] = cards;
        return cards;
      })
      .catch(() => {
        loaded.delete(lang); // try again next time
        return {};
      });
    loaded.set(lang, hit);
  }
  return hit;
}

/**
 * Whether the cards of `lang` have arrived (until then, `card()` knows none of them).
 * @param {string} lang
 */
export function cardsReady(lang) {
  return Object.hasOwn(ready, lang);
}

/**
 * The card of company `id` in `lang`, or null.
 * @param {unknown} id @param {string} lang
 * @returns {Card|null}
 */
export function card(id, lang) {
  if (typeof id !== "string" || !id) return null;
  const cards = ready[lang];
  if (!cards || !Object.hasOwn(cards, id)) return null;
  const c = cards[id];
  return c && typeof c.does === "string" && typeof c.data === "string" ? c : null;
}

/**
 * The card as DOM nodes: heading, what it does, why it wants data, where and whose.
 * Text only (`textContent`), each piece clipped to the server's limits.
 * @param {Card} c @param {string} fallbackName the node's label when the card has no name
 * @param {string} [headTag]
 * @returns {HTMLElement[]}
 */
export function cardNodes(c, fallbackName, headTag = "h3") {
  const head = document.createElement(headTag);
  head.className = "card-name";
  head.textContent = clip(c.name || fallbackName, 40);
  const does = line("card-does", clip(c.does, 120));
  const data = line("card-data", "");
  data.append(span("card-label", t("card.data")), document.createTextNode(" " + clip(c.data, 130)));
  const facts = line("card-facts", "");
  facts.append(
    span("card-label", t("card.based")),
    document.createTextNode(" " + clip(c.based, 64) + " · "),
    span("card-label", t("card.owner")),
    document.createTextNode(" " + clip(c.owner, 110)),
  );
  return [head, does, data, facts];
}

/** @param {string} className @param {string} text */
function line(className, text) {
  const p = document.createElement("p");
  p.className = className;
  p.textContent = text;
  return p;
}

/** @param {string} className @param {string} text */
function span(className, text) {
  const s = document.createElement("span");
  s.className = className;
  s.textContent = text;
  return s;
}
