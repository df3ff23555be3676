/**
 * The 3D globe: arcs from this exhibit to where the phones' data goes, on a plain sphere.
 *
 * - globe.gl draws with the pinned three.js (three-global.js); nothing is downloaded from anywhere:
 *   the sphere is a plain material (no texture, no map tiles) and the countries are world-atlas'
 *   110m shapes from /vendor/, shaded like the flat map by how much the phones sent there.
 * - Arcs are coloured like the map's (sky, trackers vermillion), their width follows traffic in a
 *   few steps. At most MAX_ARCS are drawn (the biggest), and each arc keeps one object for as long
 *   as it is shown, so hours of updates reuse the same geometry instead of piling up new ones.
 * - An update only reaches globe.gl when something it draws changed (an arc came or went, changed
 *   width step or colour): byte counts that grow every second cost a signature string, not a
 *   rebuild of every tube. Country shades are per-country materials recoloured in place.
 * - Motion means "new": a new arc flows (an animated dash) for a few seconds and rings pulse where
 *   it lands, and the globe turns slowly towards it (at most every few seconds); when nothing is
 *   new it drifts round slowly. Hidden (another view on screen), it neither draws nor animates.
 */

import { featureAlpha2 } from "./iso3166.js";
import { t } from "./i18n.js";
import { topojson } from "./vendor.js";

const ATLAS_URL = "/vendor/countries-110m.json";
/** The most arcs drawn at once: the biggest destinations; the rest are on the flat map. */
export const MAX_ARCS = 120;
/** Rings pulsing at new destinations at once. */
const MAX_RINGS = 8;
/** How long a new arc flows and its ring pulses. */
const FRESH_MS = 8000;
/** The globe turns towards new activity at most this often, then rests there before drifting. */
const TURN_EVERY_MS = 6000;
const TURN_MS = 2500;
const DWELL_MS = 12000;

// The kiosk's palette (web/css/base.css): near-black ground, land, sky for companies' places,
// vermillion for trackers, yellow for the exhibit itself.
const OCEAN = "#0f1822";
const LAND = "#233242";
const VISITED = "#56b4e9";
const ARC = "rgba(154, 211, 243, 0.75)";
const TRACKER = "rgba(213, 94, 0, 0.9)";
const HOME = "#f0e442";
/** Width steps (in globe units; the globe's radius is 100). */
const STROKES = [0.3, 0.5, 0.75, 1.05];
/** Shade steps between LAND and VISITED. */
const SHADES = 6;

/** Whether this browser can draw WebGL at all (headless Chromium can, through SwiftShader). */
export function webglAvailable() {
  try {
    const canvas = document.createElement("canvas");
    return Boolean(canvas.getContext("webgl2") || canvas.getContext("webgl"));
  } catch {
    return false;
  }
}

/** Whether the globe's two vendored scripts were loaded (`npm ci --prefix web` run on the server). */
export function globeLoaded() {
  const g = /** @type {any} */ (globalThis);
  return typeof g.Globe === "function" && Boolean(g.THREE && g.THREE.REVISION);
}

/** @type {Promise<void>|null} */
let loading = null;

/**
 * Load three.js and globe.gl, once, the first time the globe is to be shown. Not with the page:
 * merely evaluating globe.gl's file starts three of its frame tickers (requestAnimationFrame at
 * 60 Hz, about 6% of a core in headless Chromium) that its pause does not stop, so a kiosk that
 * never shows the globe must not load it at all. three first (three-global.js), then globe.gl's
 * UMD file as a same-origin `<script>` (allowed by `script-src 'self'`).
 * @returns {Promise<void>} rejects when WebGL or a vendored file is missing
 */
export function loadGlobe() {
  if (!loading) {
    loading = (async () => {
      if (!webglAvailable()) throw new Error("apviz: this browser does not draw WebGL");
      await import("./three-global.js");
      await new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = "/vendor/globe.gl.min.js";
        script.onload = resolve;
        script.onerror = () => reject(new Error("apviz: /vendor/globe.gl.min.js is missing (npm ci --prefix web)"));
        document.head.append(script);
      });
      if (!globeLoaded()) throw new Error("apviz: globe.gl did not load");
    })();
  }
  return loading;
}

export class GlobeView {
  /**
   * @param {HTMLElement} box the element the canvas goes in
   * @param {{metric?: "bytes"|"connections"}} [opts]
   */
  constructor(box, opts = {}) {
    const g = /** @type {any} */ (globalThis);
    this.THREE = g.THREE;
    this.box = box;
    this.metric = opts.metric === "connections" ? "connections" : "bytes";
    this.visible = false;
    this.stale = false;
    /** @type {any} */
    this.lastView = null;
    /** @type {Map<string, any>} arc id -> the one object globe.gl knows it by */
    this.arcs = new Map();
    this.arcSignature = "";
    /** @type {any[]} */
    this.rings = [];
    this.gatewayKey = "";
    /** @type {any[]} */
    this.features = [];
    this.lastTurn = -Infinity;
    /** @type {number|undefined} */
    this.driftTimer = undefined;
    /** @type {number|undefined} */
    this.freshTimer = undefined;
    this.box.setAttribute("role", "img");

    const THREE = this.THREE;
    this.sideMaterial = new THREE.MeshLambertMaterial({ color: LAND, transparent: true, opacity: 0.6 });
    this.globe = new g.Globe(box, {
      waitForGlobeReady: false,
      animateIn: false,
      rendererConfig: { antialias: false, alpha: true, powerPreference: "low-power" },
    })
      .backgroundColor("rgba(0,0,0,0)")
      .enablePointerInteraction(false)
      .showAtmosphere(true)
      .atmosphereColor(VISITED)
      .atmosphereAltitude(0.12)
      .polygonsTransitionDuration(0)
      .polygonAltitude(0.006)
      .polygonCapMaterial((/** @type {any} */ f) => f.capMaterial)
      .polygonSideMaterial(() => this.sideMaterial)
      .polygonStrokeColor(() => "rgba(11, 15, 20, 0.9)")
      .arcsTransitionDuration(0)
      .arcCurveResolution(32)
      .arcCircularResolution(4)
      .arcAltitudeAutoScale(0.45)
      .arcColor("color")
      .arcStroke("stroke")
      .arcDashLength("dashLength")
      .arcDashGap("dashGap")
      .arcDashAnimateTime("dashTime")
      .pointsTransitionDuration(0)
      .pointColor(() => HOME)
      .pointAltitude(0.015)
      .pointRadius(0.9)
      .pointsMerge(false)
      .ringColor((/** @type {any} */ r) => (/** @type {number} */ k) =>
        r.tracker ? `rgba(255, 140, 69, ${1 - k})` : `rgba(255, 255, 255, ${1 - k})`,
      )
      .ringMaxRadius(4)
      .ringPropagationSpeed(2.5)
      .ringRepeatPeriod(1100);
    const sphere = this.globe.globeMaterial();
    sphere.color = new THREE.Color(OCEAN);
    if (sphere.shininess !== undefined) sphere.shininess = 4;
    const controls = this.globe.controls();
    controls.enableZoom = false;
    controls.autoRotate = true;
    controls.autoRotateSpeed = 0.35;
    this.globe.pointOfView({ lat: 30, lng: 10, altitude: 2.3 });
    this.globe.pauseAnimation(); // until shown
    this.ready = this.#load();
  }

  async #load() {
    const response = await fetch(ATLAS_URL);
    if (!response.ok) throw new Error(`apviz: ${ATLAS_URL}: HTTP ${response.status}`);
    const topology = await response.json();
    const THREE = this.THREE;
    this.features = topojson
      .feature(topology, topology.objects.countries)
      .features.filter((/** @type {any} */ f) => String(f.id) !== "010"); // Antarctica: nobody talks to it
    for (const f of this.features) {
      f.alpha2 = featureAlpha2(f);
      f.shade = 0;
      f.capMaterial = new THREE.MeshLambertMaterial({ color: LAND });
    }
    this.globe.polygonsData(this.features);
    if (this.lastView) this.render(this.lastView, new Map());
  }

  /** @param {number} width @param {number} height */
  resize(width, height) {
    if (width < 50 || height < 50) return;
    this.globe.width(Math.round(width)).height(Math.round(height));
  }

  /** @param {"bytes"|"connections"} metric */
  setMetric(metric) {
    this.metric = metric;
    if (this.lastView) this.render(this.lastView, new Map());
  }

  /**
   * Shown or hidden by the kiosk's layout. Hidden, the globe stops its animation loop (no WebGL
   * work at all) and skips updates; shown again, it catches up with the latest view at once.
   * @param {boolean} visible
   */
  setVisible(visible) {
    if (visible === this.visible) return;
    this.visible = visible;
    if (visible) {
      this.globe.resumeAnimation();
      if (this.stale && this.lastView) this.render(this.lastView, new Map());
    } else {
      this.globe.pauseAnimation();
    }
  }

  /**
   * @param {Record<string, any>} view
   * @param {Map<string, Set<string>>} added ids new in this update
   */
  render(view, added) {
    this.lastView = view;
    this.box.setAttribute("aria-label", t("globe.label"));
    if (!this.visible) {
      this.stale = true;
      return;
    }
    this.stale = false;
    const now = performance.now();
    const points = Object.values(view.points || {});
    const anyBytes = points.some((p) => p.bytes > 0);
    const metric = this.metric === "bytes" && anyBytes ? "bytes" : "connections";
    const size = (/** @type {any} */ d) => Math.max(0, d[metric] || 0);

    this.#shadeCountries(view.countries || {}, size);
    this.#gateway(view.gateway);

    const fresh = added.get("arcs") || new Set();
    const shown = Object.values(view.arcs || {})
      .filter((a) => isFinite(a.lat) && isFinite(a.lon) && isFinite(a.from_lat) && isFinite(a.from_lon))
      .sort((a, b) => size(b) - size(a) || (a.id < b.id ? -1 : 1))
      .slice(0, MAX_ARCS);
    let maxA = 1;
    for (const a of shown) maxA = Math.max(maxA, size(a));
    const keep = new Set();
    /** @type {any} */
    let newest = null;
    for (const a of shown) {
      keep.add(a.id);
      let arc = this.arcs.get(a.id);
      if (!arc) {
        arc = { id: a.id, freshUntil: 0 };
        this.arcs.set(a.id, arc);
      }
      if (fresh.has(a.id)) {
        arc.freshUntil = now + FRESH_MS;
        if (!newest || size(a) > size(newest)) newest = a;
      }
      const flowing = arc.freshUntil > now;
      arc.startLat = a.from_lat;
      arc.startLng = a.from_lon;
      arc.endLat = a.lat;
      arc.endLng = a.lon;
      arc.tracker = Boolean(a.tracker);
      arc.color = arc.tracker ? TRACKER : ARC;
      arc.level = widthStep(arc.level, Math.sqrt(size(a) / maxA) * STROKES.length);
      arc.stroke = STROKES[arc.level];
      arc.dashLength = flowing ? 0.4 : 1;
      arc.dashGap = flowing ? 0.2 : 0;
      arc.dashTime = flowing ? 1800 : 0;
    }
    for (const id of this.arcs.keys()) if (!keep.has(id)) this.arcs.delete(id);
    const list = [...this.arcs.values()];
    const signature = list
      .map((a) => `${a.id}|${a.stroke}|${a.tracker ? 1 : 0}|${a.dashTime}|${a.endLat},${a.endLng}`)
      .join(";");
    if (signature !== this.arcSignature) {
      this.arcSignature = signature;
      this.globe.arcsData(list);
    }
    this.#rings(now, shown.filter((a) => fresh.has(a.id)));
    if (list.some((a) => a.freshUntil > now)) this.#settleLater(now);
    if (newest) this.#turnTowards(view.gateway, newest, now);
  }

  /** Country caps take the flat map's shading (log scale), recoloured in place. */
  #shadeCountries(/** @type {Record<string, any>} */ countries, /** @type {(d: any) => number} */ size) {
    if (!this.features.length) return;
    let maxC = 1;
    for (const c of Object.values(countries)) maxC = Math.max(maxC, size(c));
    const top = Math.log(maxC + 2);
    for (const f of this.features) {
      const c = f.alpha2 && countries[f.alpha2];
      const shade = c ? 1 + Math.round((Math.log(size(c) + 2) / top) * (SHADES - 1)) : 0;
      if (shade === f.shade) continue;
      f.shade = shade;
      if (shade === 0) f.capMaterial.color.set(LAND);
      else f.capMaterial.color.set(LAND).lerp(new this.THREE.Color(VISITED), 0.25 + (0.75 * shade) / SHADES);
    }
  }

  /** The exhibit's own mark: one yellow point. */
  #gateway(/** @type {any} */ gw) {
    const ok = gw && isFinite(gw.lat) && isFinite(gw.lon);
    const key = ok ? `${gw.lat},${gw.lon}` : "";
    if (key === this.gatewayKey) return;
    this.gatewayKey = key;
    this.globe.pointsData(ok ? [{ lat: gw.lat, lng: gw.lon }] : []);
  }

  /** Rings where new arcs land, for FRESH_MS; never more than MAX_RINGS. */
  #rings(/** @type {number} */ now, /** @type {any[]} */ fresh) {
    const before = this.rings.length;
    let rings = this.rings.filter((r) => r.until > now);
    const changed = rings.length !== before || fresh.length > 0;
    for (const a of fresh) rings.push({ lat: a.lat, lng: a.lon, tracker: Boolean(a.tracker), until: now + FRESH_MS });
    rings = rings.slice(-MAX_RINGS);
    this.rings = rings;
    if (changed) this.globe.ringsData(rings);
  }

  /** When the newest arc stops flowing, draw once more so it settles (and its ring goes). */
  #settleLater(/** @type {number} */ now) {
    if (this.freshTimer !== undefined) return;
    const next = Math.min(...[...this.arcs.values(), ...this.rings].map((a) => a.freshUntil || a.until || Infinity));
    this.freshTimer = window.setTimeout(() => {
      this.freshTimer = undefined;
      if (this.lastView) this.render(this.lastView, new Map());
    }, Math.max(100, next - now + 50));
  }

  /**
   * Turn slowly to face the middle of the newest arc (the exhibit and where the data lands both in
   * sight), stop drifting for a while, then drift on. At most once every TURN_EVERY_MS: a busy
   * room must not make the globe spin.
   */
  #turnTowards(/** @type {any} */ gw, /** @type {any} */ arc, /** @type {number} */ now) {
    if (now - this.lastTurn < TURN_EVERY_MS) return;
    this.lastTurn = now;
    const from = gw && isFinite(gw.lat) ? [gw.lat, gw.lon] : [arc.from_lat, arc.from_lon];
    const [lat, lng] = midpoint(from[0], from[1], arc.lat, arc.lon);
    const controls = this.globe.controls();
    controls.autoRotate = false;
    this.globe.pointOfView({ lat, lng, altitude: 2.3 }, TURN_MS);
    clearTimeout(this.driftTimer);
    this.driftTimer = window.setTimeout(() => {
      controls.autoRotate = true;
    }, TURN_MS + DWELL_MS);
  }

  /** Figures for the tests and the benchmark (`?debug=1`). */
  stats() {
    const info = this.globe.renderer().info;
    return {
      arcs: this.globe.arcsData().length,
      tracked: this.arcs.size,
      rings: this.globe.ringsData().length,
      countries: this.features.length,
      visible: this.visible,
      geometries: info.memory.geometries,
      textures: info.memory.textures,
      sceneObjects: countObjects(this.globe.scene()),
      revision: this.THREE.REVISION,
    };
  }

  /**
   * Draw one frame now and count what is on it (read back in the same task, so no
   * preserveDrawingBuffer is needed): lit pixels and distinct colours, to tell a globe from a
   * blank or single-colour canvas.
   */
  pixels() {
    const renderer = this.globe.renderer();
    renderer.render(this.globe.scene(), this.globe.camera());
    const gl = renderer.getContext();
    const w = gl.drawingBufferWidth;
    const h = gl.drawingBufferHeight;
    const buf = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, buf);
    let lit = 0;
    let vermillion = 0;
    const colours = new Set();
    for (let i = 0; i < buf.length; i += 4) {
      if (buf[i + 3] === 0) continue;
      lit += 1;
      colours.add(((buf[i] >> 4) << 8) | ((buf[i + 1] >> 4) << 4) | (buf[i + 2] >> 4));
      if (buf[i] > 150 && buf[i] > buf[i + 1] * 1.6 && buf[i] > buf[i + 2] * 2.5) vermillion += 1;
    }
    return { width: w, height: h, lit, colours: colours.size, vermillion };
  }
}

/**
 * The width step for an arc whose traffic puts it at `raw` (0..STROKES.length), keeping its
 * current step unless it moved a fifth of a step past either edge: an arc near a boundary would
 * otherwise flip every update, and every flip rebuilds the arcs in globe.gl.
 * @param {number|undefined} current
 * @param {number} raw
 */
function widthStep(current, raw) {
  const top = STROKES.length - 1;
  const plain = Math.min(top, Math.floor(raw));
  if (current === undefined) return plain;
  if (raw >= current - 0.2 && raw < current + 1.2) return current;
  return plain;
}

/** The point halfway along the great circle between two places, as [lat, lng]. */
function midpoint(/** @type {number} */ lat1, /** @type {number} */ lon1, /** @type {number} */ lat2, /** @type {number} */ lon2) {
  const r = Math.PI / 180;
  const [p1, l1, p2, l2] = [lat1 * r, lon1 * r, lat2 * r, lon2 * r];
  const x = Math.cos(p1) * Math.cos(l1) + Math.cos(p2) * Math.cos(l2);
  const y = Math.cos(p1) * Math.sin(l1) + Math.cos(p2) * Math.sin(l2);
  const z = Math.sin(p1) + Math.sin(p2);
  if (Math.hypot(x, y, z) < 1e-9) return [lat2, lon2]; // antipodes: any middle will do
  return [Math.atan2(z, Math.hypot(x, y)) / r, Math.atan2(y, x) / r];
}

/** @param {any} obj */
function countObjects(obj) {
  let n = 0;
  obj.traverse(() => {
    n += 1;
  });
  return n;
}
