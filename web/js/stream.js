/**
 * The live view, kept in step with the server over Server-Sent Events.
 *
 * The server sends `event: snapshot` ({seq, view}) and then `event: delta` ({seq, base, changes});
 * each message's SSE id is its seq, so when the connection drops the browser's own reconnect sends
 * `Last-Event-ID` and the server either replays the missed deltas or sends a fresh snapshot. This
 * module adds what the browser does not: a reconnect after the stream was refused or closed for
 * good (EventSource gives up on a non-200 answer), a quicker reconnect while the server is
 * unreachable (the browser's own retry comes every 3 s; a restarted apviz should be back on screen
 * within about a second of listening again), a resync when a delta does not follow the seq we hold,
 * and a visible status so a frozen screen never pretends to be live.
 *
 * `applyDelta` does exactly what apviz.live.diff.apply does on the server (tests compare them).
 */

/**
 * @typedef {Record<string, any>} View
 * @typedef {{view: View, seq: number, snapshot: boolean, added: Map<string, Set<string>>, applyMs: number}} Update
 *   added: for each keyed section, the ids that were not in the view before this update;
 *   applyMs: the time spent parsing and applying the message.
 * @typedef {"connecting"|"live"|"reconnecting"} Status
 */

/**
 * A section object with no prototype, so an id such as "__proto__" is just a key.
 * @param {Record<string, any>|null|undefined} from
 */
function section(from) {
  const out = Object.create(null);
  if (from && typeof from === "object") for (const k of Object.keys(from)) out[k] = from[k];
  return out;
}

/**
 * Apply one delta to `view` in place, like the server's `diff.apply`:
 * `{"set": value}` replaces a value (null removes it); `{"upsert": [...], "remove": [...]}`
 * edits a keyed section item by item.
 * @param {View} view
 * @param {Record<string, any>} changes
 * @returns {Map<string, Set<string>>} ids new to each keyed section
 */
export function applyDelta(view, changes) {
  const added = new Map();
  for (const key of Object.keys(changes)) {
    const change = changes[key];
    if (change && Object.prototype.hasOwnProperty.call(change, "set")) {
      if (change.set === null) delete view[key];
      else view[key] = change.set;
      continue;
    }
    const before = view[key];
    const sec = before && typeof before === "object" && Object.getPrototypeOf(before) === null ? before : section(before);
    for (const id of change.remove || []) delete sec[id];
    const fresh = new Set();
    for (const item of change.upsert || []) {
      if (!(item.id in sec)) fresh.add(item.id);
      sec[item.id] = item;
    }
    view[key] = sec;
    if (fresh.size) added.set(key, fresh);
  }
  return added;
}

/**
 * A snapshot's view, with its keyed sections turned into prototype-free objects.
 * @param {View} raw
 * @returns {View}
 */
export function fromSnapshot(raw) {
  const view = Object.create(null);
  for (const key of Object.keys(raw || {})) {
    const value = raw[key];
    view[key] = isKeyed(value) ? section(value) : value;
  }
  return view;
}

/**
 * Same test as the server's `_is_keyed`: every value is an object whose id is its key.
 * @param {unknown} value
 */
function isKeyed(value) {
  if (!value || typeof value !== "object" || Array.isArray(value)) return false;
  return Object.entries(value).every(([k, v]) => v && typeof v === "object" && v.id === k);
}

/**
 * One EventSource, reopened as needed; calls `onUpdate` for every snapshot and applied delta and
 * `onStatus` whenever the connection state changes.
 */
export class LiveStream {
  /**
   * @param {string} url
   * @param {{onUpdate: (u: Update) => void, onStatus?: (s: Status, info: {since: number|null}) => void,
   *          minRetryMs?: number, maxRetryMs?: number, downRetryMs?: number}} opts
   */
  constructor(url, opts) {
    this.url = url;
    this.onUpdate = opts.onUpdate;
    this.onStatus = opts.onStatus || (() => {});
    this.minRetryMs = opts.minRetryMs ?? 1000;
    this.maxRetryMs = opts.maxRetryMs ?? 15000;
    // While the server cannot be reached at all, a try costs nothing (a refused TCP connect), so
    // it is made at a steady pace, not a growing one: the screen is back soon after the server.
    this.downRetryMs = opts.downRetryMs ?? 1000;
    this.failedRetries = 0;
    /** @type {View|null} */
    this.view = null;
    this.seq = -1;
    /** @type {Status} */
    this.status = "connecting";
    this.lastData = null;
    this.retryMs = this.minRetryMs;
    /** @type {EventSource|null} */
    this.source = null;
    this.timer = 0;
    this.stats = { snapshots: 0, deltas: 0, resyncs: 0, reopens: 0 };
  }

  start() {
    this.#open();
  }

  stop() {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }

  /** @param {Status} status */
  #setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.onStatus(status, { since: this.lastData });
  }

  #open() {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    const source = new EventSource(this.url);
    this.source = source;
    // The listeners belong to this EventSource only; it is closed (and dropped) before the next
    // one is made, so reconnecting for hours does not pile up listeners.
    source.addEventListener("open", () => {
      this.retryMs = this.minRetryMs;
      this.failedRetries = 0;
      // On a resumed stream no snapshot follows when nothing was missed: open means live.
      if (this.view) this.#setStatus("live");
    });
    source.addEventListener("snapshot", (ev) => this.#onSnapshot(/** @type {MessageEvent} */ (ev)));
    source.addEventListener("delta", (ev) => this.#onDelta(/** @type {MessageEvent} */ (ev)));
    source.addEventListener("error", () => {
      if (source !== this.source) return;
      this.#setStatus(this.view ? "reconnecting" : "connecting");
      if (source.readyState === EventSource.CLOSED) this.#reopenLater();
      else if (this.failedRetries++ > 0) this.#reopenSoon();
      // Otherwise (the first drop) the browser retries by itself and sends Last-Event-ID, so a
      // connection that merely dropped resumes without a snapshot. Once that retry failed too, the
      // server is down (a restart resyncs anyway): from then on we retry, sooner than the browser.
    });
  }

  /** The stream was refused or ended for good (e.g. 429, 503): try again with a growing delay. */
  #reopenLater() {
    if (this.source) this.source.close();
    this.source = null;
    const jitter = 0.8 + Math.random() * 0.4;
    this.timer = setTimeout(() => this.#open(), this.retryMs * jitter);
    this.retryMs = Math.min(this.retryMs * 2, this.maxRetryMs);
    this.stats.reopens += 1;
  }

  /** The server is unreachable: a new EventSource after about `downRetryMs` (no growth). */
  #reopenSoon() {
    if (this.source) this.source.close();
    this.source = null;
    const jitter = 0.8 + Math.random() * 0.4;
    this.timer = setTimeout(() => this.#open(), this.downRetryMs * jitter);
    this.stats.reopens += 1;
  }

  /** @param {MessageEvent} ev */
  #onSnapshot(ev) {
    const t0 = performance.now();
    const data = JSON.parse(ev.data);
    this.view = fromSnapshot(data.view || {});
    this.seq = data.seq;
    this.epoch = data.epoch;
    this.lastData = Date.now();
    this.stats.snapshots += 1;
    this.#setStatus("live");
    const applyMs = performance.now() - t0;
    this.onUpdate({ view: this.view, seq: this.seq, snapshot: true, added: new Map(), applyMs });
  }

  /** @param {MessageEvent} ev */
  #onDelta(ev) {
    const t0 = performance.now();
    const data = JSON.parse(ev.data);
    if (!this.view || data.base !== this.seq || (data.epoch !== undefined && data.epoch !== this.epoch)) {
      // Not the continuation of what we hold (a restarted server, a lost message): start over
      // with a new EventSource, which sends no Last-Event-ID and so gets a snapshot.
      this.stats.resyncs += 1;
      this.view = null;
      this.seq = -1;
      this.#open();
      return;
    }
    const added = applyDelta(this.view, data.changes || {});
    this.seq = data.seq;
    this.lastData = Date.now();
    this.stats.deltas += 1;
    this.#setStatus("live");
    const applyMs = performance.now() - t0;
    this.onUpdate({ view: this.view, seq: this.seq, snapshot: false, added, applyMs });
  }
}
