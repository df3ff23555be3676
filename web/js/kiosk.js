/**
 * The kiosk page: counters, the sankey and the map, kept live by the event stream.
 *
 * Deltas are applied as soon as they arrive (cheap), but drawing waits for the next animation
 * frame and draws once for however many deltas came in between: a slow screen shows the latest
 * state a little later instead of queueing work, and a hidden tab draws nothing at all.
 *
 * URL options: `?layout=rotate&every=20` shows one view at a time, switching every 20 s
 * (5..600; also `sankey`, `map` or `globe` alone; the globe takes its turn when WebGL works) until the operator chooses views (`view.screen.layout`
 * and `rotate_every`), which then apply; `?width=connections` sizes lines by connection counts instead of bytes; `?debug=1`
 * exposes `window.apviz` (view, timings) for the tests and the render benchmark.
 *
 * The language is the operator's (`view.screen.lang`): when it changes, the catalogue is loaded
 * and everything is drawn again in the new words. `view.screen.paused` (the operator froze the
 * picture) and `view.screen.recording` (the attract mode replays a recording) each show a banner,
 * so a frozen or replayed picture is never taken for live.
 *
 * The caption (`caption.js`) shows the card of a company on screen, taking turns (`?cards=0` turns
 * it off, `?cardEvery=12` sets the seconds per card).
 */

import { Caption } from "./caption.js";
import { MapView } from "./map.js";
import { GlobeView, loadGlobe } from "./globe.js";
import { SankeyView } from "./sankey.js";
import { LiveStream } from "./stream.js";
import { language, onLanguage, setLanguage, t } from "./i18n.js";
import { attribution, formatCount, setText } from "./text.js";
import { requireVendor } from "./vendor.js";
import "./join.js"; // the join card (Wi-Fi and phone-page QR codes), when configured

const params = new URLSearchParams(location.search);
const LAYOUTS = ["side", "sankey", "map", "globe", "rotate"];
const urlLayout = LAYOUTS.includes(params.get("layout") || "") ? params.get("layout") : "side";
const urlEvery = clampEvery(params.get("every"));
let metric = params.get("width") === "connections" ? "connections" : "bytes";
const debug = params.get("debug") === "1";
const cardsOn = params.get("cards") !== "0";
const cardEvery = Math.min(120, Math.max(3, Number(params.get("cardEvery")) || 12));

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

async function main() {
  fitToScreen();
  window.addEventListener("resize", fitToScreen);
  await setLanguage("en"); // the fallback words, before the first view names the operator's language
  try {
    requireVendor("d3", "sankey", "topojson");
  } catch (err) {
    setText($("status-text"), String(err.message || err));
    document.body.classList.add("broken");
    throw err;
  }
  const sankey = new SankeyView(/** @type {any} */ ($("sankey-svg")), { metric });
  const map = new MapView(/** @type {any} */ ($("map-svg")), { metric });
  watchSize($("sankey-box"), (w, h) => sankey.resize(w, h));
  watchSize($("map-box"), (w, h) => map.resize(w, h));
  const caption = cardsOn ? new Caption($("caption"), { every: cardEvery * 1000 }) : null;
  // The globe, loaded and made the first time it is shown (globe.js says why not before). When
  // this browser draws no WebGL or the server lacks globe.gl's files, the "globe" layout shows
  // the flat map and the turns skip it.
  /** @type {GlobeView|null} */
  let globe = null;
  /** @type {any} the latest view, for a globe made after it arrived */
  let latest = null;
  /** @type {Promise<GlobeView>|null} */
  let making = null;
  const makeGlobe = () => {
    making ||= loadGlobe().then(() => {
      $("globe-panel").hidden = false;
      const made = new GlobeView($("globe-box"), { metric });
      globe = made;
      watchSize($("globe-box"), (w, h) => made.resize(w, h));
      if (latest) made.render(latest, new Map());
      return made;
    });
    return making;
  };
  const layout = new Layout($("stage"), "WebGLRenderingContext" in window ? makeGlobe : null);
  layout.set(urlLayout, urlEvery);

  const counters = {
    devices: $("count-devices"),
    companies: $("count-companies"),
    countries: $("count-countries"),
    trackers: $("count-trackers"),
  };
  const timings = new Ring(2000);
  const frames = new Ring(2000);
  const globeTimings = new Ring(2000);

  /** @type {{view: any, added: Map<string, Set<string>>, applyMs: number, since: number}|null} */
  let pending = null;
  let scheduled = false;
  let first = true;

  function draw() {
    scheduled = false;
    if (!pending) return;
    const { view, added, applyMs, since } = pending;
    pending = null;
    const t0 = performance.now();
    sankey.render(view, added, first);
    map.render(view, added);
    if (caption) caption.update(view, added);
    first = false;
    // The globe's own figure (bench/render.py puts it beside the flat views'): its render plus
    // the same parse + apply; the flat views' figure leaves the globe's render out.
    let globeMs = 0;
    if (globe) {
      const g0 = performance.now();
      globe.render(view, added);
      globeMs = performance.now() - g0;
      if (globe.visible) globeTimings.push(applyMs + globeMs);
    }
    updateCounters(view);
    updateScreen(view);
    setText($("attribution"), attribution(view));
    setText($("metric-text"), widthText());
    const t1 = performance.now();
    timings.push(applyMs + (t1 - t0) - globeMs);
    // Until the frame that shows it: the time a visitor waits after the data arrived.
    requestAnimationFrame(() => frames.push(performance.now() - since));
  }

  /** @param {import("./stream.js").Update} update @param {number} applyMs */
  function onUpdate(update, applyMs) {
    if (!pending) pending = { view: update.view, added: new Map(), applyMs: 0, since: performance.now() };
    pending.view = update.view;
    latest = update.view;
    pending.applyMs += applyMs;
    for (const [key, ids] of update.added) {
      const set = pending.added.get(key) || new Set();
      for (const id of ids) set.add(id);
      pending.added.set(key, set);
    }
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(draw);
    }
  }

  /** @param {any} view */
  function updateCounters(view) {
    const totals = view.totals || {};
    for (const [key, el] of Object.entries(counters)) {
      const text = formatCount(totals[key] || 0);
      if (el.textContent !== text) {
        el.textContent = text;
        // Web Animations, not a style attribute: allowed by the page's CSP.
        el.animate([{ transform: "scale(1.25)" }, { transform: "scale(1)" }], { duration: 600, easing: "ease-out" });
      }
    }
  }

  /** The operator's language and the paused / recording banners, from `view.screen`. */
  let wantedLang = "en";
  /** @param {any} view */
  function updateScreen(view) {
    const screen = (view && view.screen) || {};
    $("banner-paused").hidden = screen.paused !== true;
    $("banner-recording").hidden = screen.recording !== true;
    document.body.classList.toggle("paused", screen.paused === true);
    document.body.classList.toggle("recording", screen.recording === true);
    if (LAYOUTS.includes(screen.layout)) layout.set(screen.layout, clampEvery(screen.rotate_every));
    else layout.set(urlLayout, urlEvery); // the operator has not chosen (or a reset server forgot)
    const lang = typeof screen.lang === "string" ? screen.lang : "en";
    if (lang !== wantedLang) {
      wantedLang = lang;
      setLanguage(lang);
    }
  }

  onLanguage(() => {
    // New words everywhere: the status pill, the width hint, and a full redraw of the charts.
    setText($("status-text"), t(`kiosk.status.${stream.status}`));
    setText($("metric-text"), widthText());
    if (stream.view) {
      sankey.render(stream.view, new Map(), true);
      map.render(stream.view, new Map());
      if (globe) globe.render(stream.view, new Map());
    }
    if (caption) caption.relanguage();
  });

  function widthText() {
    if (sankey.effective === "connections" && metric === "bytes") return t("kiosk.width.connectionsFallback");
    return sankey.effective === "bytes" ? t("kiosk.width.bytes") : t("kiosk.width.connections");
  }

  const metricButton = $("metric");
  metricButton.addEventListener("click", () => {
    metric = metric === "bytes" ? "connections" : "bytes";
    metricButton.setAttribute("aria-pressed", String(metric === "connections"));
    sankey.setMetric(metric);
    map.setMetric(metric);
    if (globe) globe.setMetric(metric);
    setText($("metric-text"), widthText());
  });
  metricButton.setAttribute("aria-pressed", String(metric === "connections"));
  setText($("metric-text"), widthText());

  const stream = new LiveStream("/events", {
    onUpdate: (u) => onUpdate(u, u.applyMs || 0),
    onStatus: (status) => {
      const pill = $("status");
      pill.dataset.state = status;
      document.body.classList.toggle("offline", status !== "live");
      setText($("status-text"), t(`kiosk.status.${status}`));
    },
  });
  stream.start();

  if (debug) {
    /** @type {any} */ (window).apviz = {
      stream,
      view: () => stream.view,
      language,
      caption,
      timings: () => timings.values(),
      frames: () => frames.values(),
      get globe() {
        return globe;
      },
      globeTimings: () => globeTimings.values(),
      clearTimings: () => {
        timings.clear();
        frames.clear();
        globeTimings.clear();
      },
    };
  }
}

/** @param {any} value seconds between views when they take turns: 5..600, 20 if unreadable */
function clampEvery(value) {
  return Math.min(600, Math.max(5, Number(value) || 20));
}

/**
 * Which views the stage shows: `side` (both flat views), `sankey`, `map` or `globe` alone, or
 * `rotate` (one at a time, in turn every `every` seconds). Single views reuse the rotating layout
 * with the timer off. Without a globe (no WebGL), `globe` shows the map and the turns skip it.
 */
class Layout {
  /** @param {HTMLElement} stage @param {(() => Promise<GlobeView>)|null} makeGlobe null without WebGL */
  constructor(stage, makeGlobe) {
    this.stage = stage;
    this.makeGlobe = makeGlobe;
    /** @type {GlobeView|null} */
    this.globe = null;
    this.views = makeGlobe ? ["sankey", "map", "globe"] : ["sankey", "map"];
    this.name = "";
    this.every = 0;
    /** @type {number|undefined} */
    this.timer = undefined;
  }

  /** @param {string} name @param {number} every */
  set(name, every) {
    if (name === this.name && (name !== "rotate" || every === this.every)) return;
    this.name = name;
    this.every = every;
    clearInterval(this.timer);
    this.timer = undefined;
    document.body.classList.toggle("layout-side", name === "side");
    document.body.classList.toggle("layout-rotate", name !== "side");
    document.body.dataset.layout = name;
    if (name === "side") {
      this.show("");
      return;
    }
    this.show(name === "rotate" ? "sankey" : name);
    if (name === "rotate") {
      this.timer = window.setInterval(() => {
        const next = (this.views.indexOf(this.stage.dataset.active || "") + 1) % this.views.length;
        this.show(this.views[next]);
      }, every * 1000);
    }
  }

  /** @param {string} view the single view on stage ("" when side by side) */
  show(view) {
    if (view === "globe" && !this.globe) {
      if (this.makeGlobe) this.#make(this.makeGlobe);
      else view = "map";
    }
    if (view) this.stage.dataset.active = view;
    if (this.globe) this.globe.setVisible(view === "globe");
  }

  /** Load and make the globe; show it if it is still wanted, or give up on it for good. */
  #make(/** @type {() => Promise<GlobeView>} */ makeGlobe) {
    makeGlobe().then(
      (globe) => {
        this.globe = globe;
        globe.setVisible(this.stage.dataset.active === "globe");
      },
      (err) => {
        console.warn(String(err && err.message ? err.message : err));
        this.makeGlobe = null;
        this.views = ["sankey", "map"];
        if (this.stage.dataset.active === "globe") this.show("map");
      },
    );
  }
}

/** The size the kiosk is laid out for: a 1080p television. */
const DESIGN = { width: 1920, height: 1080 };

/**
 * Scale the whole page to the screen: the kiosk is laid out once, for 1920 x 1080, and a 1280 x 720
 * or a 2560 x 1440 screen shows the same picture smaller or larger, instead of panels that
 * overflow or float in empty space. (CSS `zoom` set from script: the CSP forbids inline style in
 * the markup, not the style object.)
 */
function fitToScreen() {
  const scale = Math.min(window.innerWidth / DESIGN.width, window.innerHeight / DESIGN.height);
  const fitted = Math.abs(scale - 1) >= 0.02;
  document.documentElement.classList.toggle("fitted", fitted); // body: 1920 x 1080 (kiosk.css)
  document.documentElement.style.zoom = fitted ? String(Math.max(0.4, scale)) : "";
}

/**
 * Calls `fn(width, height)` whenever the element's content box changes (and once at start).
 * @param {HTMLElement} el
 * @param {(w: number, h: number) => void} fn
 */
function watchSize(el, fn) {
  const observer = new ResizeObserver((entries) => {
    for (const entry of entries) fn(entry.contentRect.width, entry.contentRect.height);
  });
  observer.observe(el);
  fn(el.clientWidth, el.clientHeight);
}

/** A fixed-size buffer of recent numbers, so timing hours of updates costs no memory growth. */
class Ring {
  /** @param {number} size */
  constructor(size) {
    this.buf = new Float64Array(size);
    this.n = 0;
  }
  /** @param {number} v */
  push(v) {
    this.buf[this.n % this.buf.length] = v;
    this.n += 1;
  }
  values() {
    const count = Math.min(this.n, this.buf.length);
    return Array.from(this.buf.subarray(0, count));
  }
  clear() {
    this.n = 0;
  }
}

main();
