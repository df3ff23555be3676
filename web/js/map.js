/**
 * The world map: where the companies' computers are, seen from this exhibit.
 *
 * - Countries are world-atlas' 110m shapes (a local file, /vendor/countries-110m.json), shaded by
 *   how much the phones here sent there (`view.countries`, keyed by ISO alpha-2; the shapes use
 *   numeric codes, hence iso3166.js).
 * - Each destination (`view.points`) is a dot sized by traffic; a tracker destination is a
 *   triangle, so it stands out without colour. Arcs (`view.arcs`) curve from the exhibit
 *   (`view.gateway`) to each place; a new arc draws itself in and its place pulses, which is the
 *   only motion on the map: motion means "this is new".
 * - Only the top few countries are named, placed greedily so labels never overlap.
 * - Size changes and fills tween with CSS transitions (cheap: no script runs per frame), and every
 *   keyed join removes what left, so hours of updates leave the element count where it was.
 */

import { featureAlpha2 } from "./iso3166.js";
import { estimateWidth, placeLabels } from "./labels.js";
import { countryName, t } from "./i18n.js";
import { clip } from "./text.js";
import { d3, topojson } from "./vendor.js";

const ATLAS_URL = "/vendor/countries-110m.json";
const TOP_LABELS = 8;

export class MapView {
  /**
   * @param {SVGSVGElement} svgEl
   * @param {{metric?: "bytes"|"connections"}} [opts]
   */
  constructor(svgEl, opts = {}) {
    this.svg = d3.select(svgEl);
    this.metric = opts.metric === "connections" ? "connections" : "bytes";
    this.width = 800;
    this.height = 420;
    this.svg.attr("role", "img");
    this.gSphere = this.svg.append("path").attr("class", "sphere");
    this.gCountries = this.svg.append("g").attr("class", "countries");
    this.gArcs = this.svg.append("g").attr("class", "arcs");
    this.gPoints = this.svg.append("g").attr("class", "points");
    this.gHome = this.svg.append("g").attr("class", "home");
    this.gLabels = this.svg.append("g").attr("class", "map-labels");
    this.features = [];
    this.projection = d3.geoEqualEarth();
    this.geoPath = d3.geoPath(this.projection);
    this.ready = this.#load();
    this.lastView = null;
    this.lastAdded = new Map();
  }

  async #load() {
    const response = await fetch(ATLAS_URL);
    if (!response.ok) throw new Error(`apviz: ${ATLAS_URL}: HTTP ${response.status}`);
    const topology = await response.json();
    const all = topojson.feature(topology, topology.objects.countries).features;
    // Antarctica takes a sixth of the height and no phone talks to it.
    this.features = all.filter((f) => String(f.id) !== "010");
    for (const f of this.features) f.alpha2 = featureAlpha2(f);
    this.#fit();
    if (this.lastView) this.render(this.lastView, this.lastAdded);
  }

  /**
   * @param {number} width
   * @param {number} height
   */
  resize(width, height) {
    if (width < 50 || height < 50) return;
    if (Math.abs(width - this.width) < 1 && Math.abs(height - this.height) < 1) return;
    this.width = width;
    this.height = height;
    this.#fit();
    if (this.lastView) this.render(this.lastView, new Map());
  }

  /** @param {"bytes"|"connections"} metric */
  setMetric(metric) {
    this.metric = metric;
    if (this.lastView) this.render(this.lastView, new Map());
  }

  #fit() {
    const W = this.width;
    const H = this.height;
    this.svg.attr("viewBox", `0 0 ${W} ${H}`);
    const pad = Math.round(Math.min(W, H) * 0.03);
    const land = { type: "FeatureCollection", features: this.features };
    if (this.features.length) this.projection.fitExtent([[pad, pad], [W - pad, H - pad]], land);
    this.geoPath = d3.geoPath(this.projection);
    this.gSphere.attr("d", this.geoPath({ type: "Sphere" }));
    this.gCountries
      .selectAll("path.country")
      .data(this.features, (/** @type {any} */ f) => f.alpha2 || f.properties.name)
      .join("path")
      .attr("class", "country")
      .attr("d", this.geoPath);
  }

  /**
   * Draw the view's countries, points and arcs. `added` holds the ids new in this update.
   * @param {Record<string, any>} view
   * @param {Map<string, Set<string>>} added
   */
  render(view, added) {
    this.lastView = view;
    this.lastAdded = added;
    this.svg.attr("aria-label", t("map.label"));
    if (!this.features.length) return; // the atlas is still loading; #load renders when it is in
    const proj = this.projection;
    const countries = view.countries || {};
    const points = Object.values(view.points || {}).filter((p) => isFinite(p.lat) && isFinite(p.lon));
    const arcs = Object.values(view.arcs || {}).filter((a) => isFinite(a.lat) && isFinite(a.lon));
    const anyBytes = points.some((p) => p.bytes > 0);
    const metric = this.metric === "bytes" && anyBytes ? "bytes" : "connections";
    const size = (/** @type {any} */ d) => Math.max(0, d[metric] || 0);
    const scale = Math.min(this.width, this.height * 2);

    // ---- country shading (log scale: one video must not make every other country look empty)
    let maxC = 0;
    for (const c of Object.values(countries)) maxC = Math.max(maxC, size(c));
    const shade = d3.scaleLog().domain([1, Math.max(2, maxC + 1)]).range([0.18, 1]).clamp(true);
    this.gCountries
      .selectAll("path.country")
      .classed("visited", (f) => Boolean(f.alpha2 && countries[f.alpha2]))
      .style("fill-opacity", (f) => {
        const c = f.alpha2 && countries[f.alpha2];
        return c ? shade(size(c) + 1).toFixed(3) : null;
      });

    // ---- arcs
    const gw = view.gateway && isFinite(view.gateway.lat) && isFinite(view.gateway.lon) ? view.gateway : null;
    const home = gw ? proj([gw.lon, gw.lat]) : null;
    let maxA = 1;
    for (const a of arcs) maxA = Math.max(maxA, size(a));
    const width = d3.scaleSqrt().domain([0, maxA]).range([1.2, Math.max(3, scale / 160)]);
    const newArcs = added.get("arcs") || new Set();
    this.gArcs
      .selectAll("path.arc")
      .data(arcs, (/** @type {any} */ d) => d.id)
      .join((enter) =>
        enter
          .append("path")
          .attr("class", (d) => "arc" + (newArcs.has(d.id) ? " fresh" : ""))
          .attr("pathLength", 1),
      )
      .classed("tracker", (d) => Boolean(d.tracker))
      .attr("d", (d) => arcPath(proj([d.from_lon, d.from_lat]) || home, proj([d.lon, d.lat])))
      .style("stroke-width", (d) => `${width(size(d)).toFixed(2)}px`);

    // ---- points (biggest drawn last, so small ones are not hidden under them)
    let maxP = 1;
    for (const p of points) maxP = Math.max(maxP, size(p));
    const radius = d3.scaleSqrt().domain([0, maxP]).range([3.5, Math.max(8, scale / 75)]);
    const newPoints = added.get("points") || new Set();
    const ordered = points.slice().sort((a, b) => size(a) - size(b) || (a.id < b.id ? -1 : 1));
    this.gPoints
      .selectAll("g.point")
      .data(ordered, (/** @type {any} */ d) => d.id)
      .join((enter) => {
        const g = enter.append("g").attr("class", "point");
        g.append("circle").attr("class", (d) => "ring" + (newPoints.has(d.id) ? " fresh" : ""));
        g.append("path").attr("class", "mark");
        g.append("title");
        return g;
      })
      .order()
      .classed("tracker", (d) => d.trackers > 0)
      .attr("transform", (d) => {
        const xy = proj([d.lon, d.lat]);
        return xy ? `translate(${xy[0].toFixed(1)},${xy[1].toFixed(1)})` : "translate(-99,-99)";
      })
      .call((g) =>
        g
          .select("path.mark")
          .attr("d", (d) => (d.trackers > 0 ? triangle(radius(size(d))) : circle(radius(size(d))))),
      )
      .call((g) =>
        g.select("title").text((d) => clip([d.city, countryName(d.country, d.country_name)].filter(Boolean).join(", "), 60)),
      );

    // ---- the exhibit itself
    this.gHome
      .selectAll("g.gateway")
      .data(home ? [gw] : [])
      .join((enter) => {
        const g = enter.append("g").attr("class", "gateway");
        g.append("circle").attr("class", "halo").attr("r", 14);
        g.append("circle").attr("class", "dot").attr("r", 7);
        return g;
      })
      .attr("transform", home ? `translate(${home[0].toFixed(1)},${home[1].toFixed(1)})` : null);

    // ---- labels: the top countries, never on top of each other or of the exhibit's own label
    const font = Math.max(14, Math.min(24, Math.round(this.height / 22)));
    const bounds = /** @type {[number, number, number, number]} */ ([0, 0, this.width, this.height]);
    const byCountry = new Map();
    for (const p of points) {
      if (!p.country) continue;
      const best = byCountry.get(p.country);
      if (!best || size(p) > size(best)) byCountry.set(p.country, p);
    }
    const requests = [];
    const homeRequest = home
      ? {
          key: "gateway",
          x: home[0],
          y: home[1],
          text: clip(gw.label || t("map.home"), 24), // no label configured: the kiosk's own words
          priority: Infinity,
          bold: true, // .home-label is bold: measured so, or a country's name could run onto it
          offsets: [[0, -26, "middle"], [16, 0, "start"], [-16, 0, "end"]],
        }
      : null;
    if (homeRequest) requests.push(homeRequest);
    for (const [code, p] of byCountry) {
      const c = countries[code];
      const xy = proj([p.lon, p.lat]);
      if (!xy) continue;
      requests.push({
        key: code,
        x: xy[0],
        y: xy[1],
        text: clip(countryName(code, (c && c.name) || p.country_name || code), 18),
        priority: c ? size(c) : size(p),
      });
    }
    // The exhibit's own label first (it may sit by its mark), then the countries, kept off the mark
    // (the halo, r 14, and a margin) and off that label.
    const spots = homeRequest ? placeLabels([homeRequest], { fontSize: font, bounds }) : new Map();
    const blocked = home ? [[home[0] - 18, home[1] - 18, home[0] + 18, home[1] + 18]] : [];
    const homeSpot = spots.get("gateway");
    if (homeRequest && homeSpot) {
      const w = estimateWidth(homeRequest.text, font, true);
      const h = font * 1.15;
      const x0 = homeSpot.anchor === "start" ? homeSpot.x : homeSpot.anchor === "end" ? homeSpot.x - w : homeSpot.x - w / 2;
      blocked.push([x0 - 3, homeSpot.y - h / 2 - 2, x0 + w + 3, homeSpot.y + h / 2 + 2]);
    }
    const others = requests.filter((r) => r !== homeRequest);
    for (const [k, v] of placeLabels(others, { fontSize: font, max: TOP_LABELS, bounds, blocked })) spots.set(k, v);
    const labels = requests.filter((r) => spots.has(r.key)).map((r) => ({ ...r, spot: spots.get(r.key) }));
    this.gLabels
      .selectAll("text")
      .data(labels, (/** @type {any} */ d) => d.key)
      .join("text")
      .attr("class", (d) => (d.key === "gateway" ? "map-label home-label" : "map-label"))
      .attr("x", (d) => d.spot.x.toFixed(1))
      .attr("y", (d) => d.spot.y.toFixed(1))
      .attr("dy", "0.35em")
      .attr("text-anchor", (d) => d.spot.anchor)
      .style("font-size", `${font}px`)
      .text((d) => d.text);
  }
}

/**
 * A curve from the exhibit to a place, bowed upwards by a fifth of its length: great circles on
 * this projection are nearly straight at this scale and read worse than a clear arc.
 */
function arcPath(from, to) {
  if (!from || !to) return null;
  const [x0, y0] = from;
  const [x1, y1] = to;
  const dx = x1 - x0;
  const dy = y1 - y0;
  const len = Math.hypot(dx, dy);
  const bow = Math.min(len * 0.22, 180);
  // Perpendicular to the chord, pointing up the screen.
  let nx = -dy / (len || 1);
  let ny = dx / (len || 1);
  if (ny > 0) {
    nx = -nx;
    ny = -ny;
  }
  const cx = (x0 + x1) / 2 + nx * bow;
  const cy = (y0 + y1) / 2 + ny * bow;
  return `M${x0.toFixed(1)},${y0.toFixed(1)}Q${cx.toFixed(1)},${cy.toFixed(1)} ${x1.toFixed(1)},${y1.toFixed(1)}`;
}

/** @param {number} r */
function circle(r) {
  const x = r.toFixed(1);
  return `M${-x},0a${x},${x} 0 1,0 ${2 * x},0a${x},${x} 0 1,0 ${-2 * x},0Z`;
}

/** An upward triangle of about the same area as a circle of radius r. @param {number} r */
function triangle(r) {
  const h = r * 1.3;
  return `M0,${(-h).toFixed(1)}L${(h * 0.9).toFixed(1)},${(h * 0.65).toFixed(1)}L${(-h * 0.9).toFixed(1)},${(h * 0.65).toFixed(1)}Z`;
}
