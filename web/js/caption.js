/**
 * The kiosk's caption: the card of a company that is on screen now, taking turns.
 *
 * It follows the view: a company that just appeared gets its card first (what a visitor's eye goes
 * to), otherwise the biggest companies take turns, one every `every` milliseconds. Only companies
 * with a card in the kiosk's language are shown (`company` on the org node, `cards.js`); when none
 * is on screen the caption is hidden and the grid gives its room back to the charts, so no text is
 * ever made up for a company without a card. Text only, through `textContent`.
 */

import { card, cardsReady, loadCards } from "./cards.js";
import { language, t } from "./i18n.js";
import { clip } from "./text.js";

/** How many of the biggest companies take turns when nothing new appears. */
const TOP = 6;
/** New companies waiting for their turn, at most. */
const QUEUE = 8;

export class Caption {
  /** @param {HTMLElement} box @param {{every?: number}} [options] */
  constructor(box, options = {}) {
    this.box = box;
    this.every = options.every ?? 12000;
    /** @type {any} */
    this.view = null;
    /** @type {string[]} org node ids that appeared and have not been shown yet */
    this.queue = [];
    /** @type {string|null} */
    this.current = null;
    this.name = /** @type {HTMLElement} */ (box.querySelector(".caption-name"));
    this.based = /** @type {HTMLElement} */ (box.querySelector(".caption-based"));
    this.text = /** @type {HTMLElement} */ (box.querySelector(".caption-text"));
    this.owner = /** @type {HTMLElement} */ (box.querySelector(".caption-owner"));
    this.timer = window.setInterval(() => this.next(true), Math.max(1000, this.every));
  }

  /** The org nodes of the view that have a card now, biggest first. */
  candidates() {
    const lang = language();
    const nodes = Object.values((this.view && this.view.nodes) || {});
    return nodes
      .filter((n) => n && n.kind === "org" && !n.other && !n.hidden && card(n.company, lang))
      .sort((a, b) => (b.bytes || 0) - (a.bytes || 0) || (b.connections || 0) - (a.connections || 0) || (a.id < b.id ? -1 : 1));
  }

  /**
   * A new view: remember companies that just appeared, keep the current card while it is on screen.
   * @param {any} view @param {Map<string, Set<string>>} added
   */
  update(view, added) {
    this.view = view;
    loadCards(language()).then(() => this.next(false));
    const fresh = added.get("nodes") || new Set();
    for (const id of fresh) {
      if (id.startsWith("o:") && !this.queue.includes(id) && id !== this.current) this.queue.push(id);
    }
    if (this.queue.length > QUEUE) this.queue.splice(0, this.queue.length - QUEUE);
    this.next(false);
  }

  /** The words changed: load that language's cards and draw the same company again. */
  relanguage() {
    loadCards(language()).then(() => {
      this.show(this.current);
      this.next(false);
    });
  }

  /**
   * Move on when it is time (`turn`), or at once when the company shown left the screen or lost
   * its card: a company that just appeared first, else the next of the biggest.
   * @param {boolean} turn
   */
  next(turn) {
    // A language whose cards are still on their way: keep what is shown (hiding the box for that
    // moment would make the charts jump twice).
    if (!cardsReady(language())) return;
    const ids = this.candidates().map((n) => n.id);
    const stillThere = this.current !== null && ids.includes(this.current);
    if (!turn && stillThere) return;
    while (this.queue.length) {
      const id = /** @type {string} */ (this.queue.shift());
      if (ids.includes(id) && id !== this.current) return this.show(id);
    }
    if (!ids.length) return this.show(null);
    const top = ids.slice(0, TOP);
    const at = top.indexOf(/** @type {string} */ (this.current));
    this.show(top[at < 0 ? 0 : (at + 1) % top.length]);
  }

  /** @param {string|null} id */
  show(id) {
    const node = id && this.view && this.view.nodes ? this.view.nodes[id] : null;
    const info = node ? card(node.company, language()) : null;
    if (!node || !info) {
      this.current = null;
      this.box.hidden = true;
      delete this.box.dataset.company;
      return;
    }
    const changed = this.current !== id || this.box.dataset.lang !== language();
    this.current = id;
    this.box.hidden = false;
    this.box.dataset.company = String(node.company);
    this.box.dataset.lang = language();
    this.box.classList.toggle("tracker", Boolean(node.tracker));
    this.name.textContent = clip(info.name || node.label, 40);
    this.based.textContent = clip(info.based, 64);
    this.text.textContent = `${clip(info.does, 120)} ${clip(info.data, 130)}`;
    this.owner.replaceChildren();
    const label = document.createElement("span");
    label.className = "card-label";
    label.textContent = t("card.owner");
    this.owner.append(label, document.createTextNode(" " + clip(info.owner, 110)));
    if (changed) this.box.animate([{ opacity: 0.2 }, { opacity: 1 }], { duration: 500, easing: "ease-out" });
  }
}
