/**
 * The sankey: phones -> companies -> countries, from the view's `nodes` and `links`.
 *
 * Design choices, and why:
 * - Stable order. Within a column nodes are sorted by label (the "other" node last), never by
 *   size, so a node does not jump when its traffic overtakes a neighbour's; sizes and positions
 *   tween instead, so the eye can follow what grew.
 * - Keyed joins everywhere (node id, link id). Items that leave get the class `exiting`, fade out
 *   and are removed; every later join ignores them, so an interrupted fade can never leave an
 *   element behind, and the number of elements stays tied to the view, not to the hours it ran.
 * - Line width is bytes by default, or connection counts when asked (or when no byte counts exist
 *   yet: conntrack accounting can be off). A thin floor keeps a brand-new connection visible.
 * - Trackers: a link with `trackers > 0` and a company node with `tracker` set are drawn in
 *   vermillion (Okabe-Ito), and the company label gets a warning sign, so the highlight does not
 *   depend on colour vision alone.
 * - Blocked attempts (`view.blocked`: "d:ID>o:ORG" -> count, from tracker blocking) are drawn as a
 *   dashed vermillion line of their own with "blocked: N" on it: a refused connection carries no
 *   bytes, so it cannot be a sankey band; dashes say "tried, did not get through". When the company
 *   has no node (no traffic ever reached it) the words stand beside the phone instead.
 * - Each phone has its own colour (`colours.js`), the one its phone page shows too.
 * - Every label goes through `clip` and d3's `.text()`: device and company names are hostile text.
 * - The page's own words (headings, "other companies", country names) come from the catalogue at
 *   each render, so a language switch is just a redraw.
 */

import { deviceClass } from "./colours.js";
import { estimateWidth, placeLabels } from "./labels.js";
import { countryName, t } from "./i18n.js";
import { clip, formatBytes, formatCount, HIDDEN } from "./text.js";
import { d3 } from "./vendor.js";

const COLUMN = { device: 0, org: 1, country: 2 };
const DURATION = 750;

/**
 * @typedef {"bytes"|"connections"} Metric
 */

export class SankeyView {
  /**
   * @param {SVGSVGElement} svgEl
   * @param {{metric?: Metric}} [opts]
   */
  constructor(svgEl, opts = {}) {
    this.svg = d3.select(svgEl);
    /** @type {Metric} what the visitor (or the URL) asked for */
    this.metric = opts.metric === "connections" ? "connections" : "bytes";
    /** @type {Metric} what is drawn: bytes fall back to connections while all byte counts are 0 */
    this.effective = this.metric;
    this.width = 960;
    this.height = 720;
    this.svg.attr("role", "img");
    this.gHeads = this.svg.append("g").attr("class", "sankey-heads");
    this.gLinks = this.svg.append("g").attr("class", "sankey-links");
    this.gBlocked = this.svg.append("g").attr("class", "sankey-blocked");
    this.gNodes = this.svg.append("g").attr("class", "sankey-nodes");
    this.gLabels = this.svg.append("g").attr("class", "sankey-labels");
    this.gEmpty = this.svg.append("g").attr("class", "sankey-empty");
    this.gEmpty.append("text").attr("class", "empty-title");
    this.gEmpty.append("text").attr("class", "empty-hint");
    this.generator = d3
      .sankey()
      .nodeId((/** @type {any} */ d) => d.id)
      .nodeAlign((/** @type {any} */ d) => COLUMN[d.kind] ?? d.depth)
      .nodeSort(compareNodes)
      .nodeWidth(22)
      .iterations(4);
    this.path = d3.sankeyLinkHorizontal();
    this.lastView = null;
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
    this.svg.attr("viewBox", `0 0 ${width} ${height}`);
    if (this.lastView) this.render(this.lastView, new Map(), true);
  }

  /** @param {Metric} metric */
  setMetric(metric) {
    this.metric = metric;
    if (this.lastView) this.render(this.lastView, new Map());
  }

  /**
   * Draw the view. `added` holds the ids new in this update; those pulse once.
   * @param {Record<string, any>} view
   * @param {Map<string, Set<string>>} added
   * @param {boolean} [instant] skip the tween (first frame, resize)
   */
  render(view, added, instant = false) {
    this.lastView = view;
    this.svg.attr("aria-label", t("sankey.label"));
    this.gEmpty.select("text.empty-title").text(t("sankey.waiting"));
    this.gEmpty.select("text.empty-hint").text(t("sankey.waitingMore"));
    const W = this.width;
    const H = this.height;
    const font = Math.max(16, Math.min(26, Math.round(H / 34)));
    const top = Math.round(font * 2.4);
    const svgNodes = Object.values(view.nodes || {});
    const known = new Set(svgNodes.map((n) => n.id));
    const rawLinks = Object.values(view.links || {}).filter((l) => known.has(l.source) && known.has(l.target));
    const totalBytes = rawLinks.reduce((s, l) => s + (l.bytes || 0), 0);
    this.effective = this.metric === "bytes" && (totalBytes > 0 || !rawLinks.length) ? "bytes" : "connections";
    const metric = this.effective;
    // The phones' labels stand left of their column, so that margin is as wide as the widest of
    // them (a German pseudonym runs to 23 letters; the visitor must find all of it). Past a third
    // of the chart the margin stops growing: the phones' amounts go first (their bars show them),
    // then those labels get a smaller font.
    let widestName = 0;
    let widest = 0;
    for (const n of svgNodes) {
      if (n.kind !== "device") continue;
      widestName = Math.max(widestName, estimateWidth(labelText(n), font * 1.1));
      widest = Math.max(widest, estimateWidth(`${labelText(n)}  ${amountText(n, metric)}`, font * 1.1));
    }
    const room = W * 0.34 - 24;
    const deviceAmounts = widest <= room;
    const need = deviceAmounts ? widest : widestName;
    const left = Math.round(Math.max(W * 0.18, Math.min(need, room) + 24));
    const deviceFont = need > room ? Math.max(11, Math.floor((font * room) / need)) : font;
    // The countries' labels stand right of their column, within the panel: the same rule on that
    // side (a German "Vereinigte Staaten" and its amount ran past the panel's edge with a fixed
    // margin). Measured as drawn: tracker names are bold.
    let widestCountryName = 0;
    let widestCountry = 0;
    for (const n of svgNodes) {
      if (n.kind !== "country") continue;
      const bold = Boolean(n.tracker);
      widestCountryName = Math.max(widestCountryName, estimateWidth(labelText(n), font * 1.05, bold));
      widestCountry = Math.max(widestCountry, estimateWidth(`${labelText(n)}  ${amountText(n, metric)}`, font * 1.05, bold));
    }
    const roomRight = W * 0.3 - 24;
    const countryAmounts = widestCountry <= roomRight;
    const needRight = countryAmounts ? widestCountry : widestCountryName;
    const right = Math.round(Math.max(W * 0.12, Math.min(needRight, roomRight) + 24));
    const countryFont = needRight > roomRight ? Math.max(11, Math.floor((font * roomRight) / needRight)) : font;
    const total = rawLinks.reduce((s, l) => s + (l[metric] || 0), 0);
    const floor = Math.max(total / 350, metric === "bytes" ? 1 : 0.05);

    const graph = {
      nodes: svgNodes.map((n) => ({ ...n })),
      links: rawLinks.map((l) => ({
        id: l.id,
        source: l.source,
        target: l.target,
        trackers: l.trackers || 0,
        value: Math.max(l[metric] || 0, floor),
      })),
    };
    const empty = graph.links.length === 0;
    this.gEmpty
      .classed("hidden", !empty)
      .selectAll("text")
      .attr("x", W / 2)
      .attr("y", (_d, i) => H / 2 + (i ? font * 1.6 : -font * 0.4));

    let nodes = [];
    let links = [];
    if (!empty) {
      const padding = Math.max(10, Math.min(font * 1.25, (H - top) / (maxColumn(graph.nodes) * 3)));
      this.generator.nodePadding(padding).extent([
        [left, top],
        [W - right, H - 6],
      ]);
      ({ nodes, links } = this.generator(graph));
      // Company names are the longest labels and sit right of their column: give that gap more
      // room than the phones' gap (links read their ends from the nodes, so they follow).
      const x0 = left + (W - right - left - this.generator.nodeWidth()) * 0.4;
      for (const n of nodes) {
        if (n.layer !== 1) continue;
        n.x1 = x0 + (n.x1 - n.x0);
        n.x0 = x0;
      }
    }
    const newLinks = added.get("links") || new Set();
    const newNodes = added.get("nodes") || new Set();
    const tween = this.svg.transition("sankey").duration(instant ? 0 : DURATION).ease(d3.easeCubicOut);

    this.#heads(nodes, font, top);

    // ---- links
    this.gLinks
      .selectAll("path.link:not(.exiting)")
      .data(links, (/** @type {any} */ d) => d.id)
      .join(
        (enter) =>
          enter
            .append("path")
            .attr("class", (d) => "link" + (newLinks.has(d.id) ? " fresh" : ""))
            .attr("d", this.path)
            .attr("stroke-width", 0),
        (update) => update,
        (exit) => exit.classed("exiting", true).transition(tween).attr("stroke-width", 0).remove(),
      )
      .classed("tracker", (d) => d.trackers > 0)
      .classed("other", (d) => d.source.other || d.target.other)
      .transition(tween)
      .attr("d", this.path)
      .attr("stroke-width", (d) => Math.max(1.5, d.width));

    this.#blocked(view, nodes, font, tween);

    // ---- nodes
    this.gNodes
      .selectAll("rect.node:not(.exiting)")
      .data(nodes, (/** @type {any} */ d) => d.id)
      .join(
        (enter) =>
          enter
            .append("rect")
            .attr("class", (d) => `node ${d.kind}${colourClass(d)}` + (newNodes.has(d.id) ? " fresh" : ""))
            .attr("x", (d) => d.x0)
            .attr("width", (d) => d.x1 - d.x0)
            .attr("y", (d) => (d.y0 + d.y1) / 2)
            .attr("height", 0),
        (update) => update,
        (exit) => exit.classed("exiting", true).transition(tween).attr("height", 0).style("opacity", 0).remove(),
      )
      .classed("tracker", (d) => Boolean(d.tracker))
      .classed("other", (d) => Boolean(d.other))
      .transition(tween)
      .attr("x", (d) => d.x0)
      .attr("width", (d) => d.x1 - d.x0)
      .attr("y", (d) => d.y0)
      .attr("height", (d) => Math.max(2, d.y1 - d.y0));

    // ---- labels: the biggest nodes of each column keep theirs when space is short
    const spots = new Map();
    for (let col = 0; col < 3; col += 1) {
      const requests = nodes
        .filter((n) => n.layer === col)
        .map((n) => {
          const anchor = col === 0 ? "end" : "start";
          const dx = col === 0 ? -12 : 12;
          return {
            key: n.id,
            x: (col === 0 ? n.x0 : n.x1),
            y: (n.y0 + n.y1) / 2,
            text: (col === 0 && !deviceAmounts) || (col === 2 && !countryAmounts) ? labelText(n) : labelText(n) + "  " + amountText(n, metric),
            priority: n.value,
            bold: Boolean(n.tracker),
            offsets: [[dx, 0, anchor]],
          };
        });
      // Width is not limited here (labels of one column never meet another column's).
      const size = (col === 0 ? deviceFont : col === 2 ? countryFont : font) * 1.05;
      for (const [k, v] of placeLabels(requests, { fontSize: size })) spots.set(k, v);
    }
    this.gLabels
      .selectAll("text.label:not(.exiting)")
      .data(nodes, (/** @type {any} */ d) => d.id)
      .join(
        (enter) => {
          const text = enter
            .append("text")
            .attr("class", (d) => `label ${d.kind}${colourClass(d)}`)
            .attr("transform", (d) => labelTransform(d, spots))
            .attr("text-anchor", (d) => (d.layer === 0 ? "end" : "start"))
            .attr("dy", "0.35em");
          text.append("tspan").attr("class", "name");
          text.append("tspan").attr("class", "amount").attr("dx", "0.45em");
          return text;
        },
        (update) => update,
        (exit) => exit.classed("exiting", true).transition(tween).style("opacity", 0).remove(),
      )
      .style("font-size", (d) => `${d.layer === 0 ? deviceFont : d.layer === 2 ? countryFont : font}px`)
      .classed("tracker", (d) => Boolean(d.tracker))
      .classed("hidden", (d) => !spots.has(d.id))
      .call((sel) => sel.select("tspan.name").text(labelText))
      .call((sel) =>
        sel
          .select("tspan.amount")
          .text((d) => ((d.layer === 0 && !deviceAmounts) || (d.layer === 2 && !countryAmounts) ? "" : amountText(d, metric))),
      )
      .transition(tween)
      .attr("transform", (d) => labelTransform(d, spots));
  }

  /** Dashed lines for blocked attempts, keyed by link id like the sankey's own links. */
  #blocked(view, nodes, font, tween) {
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const items = [];
    for (const [id, count] of Object.entries(view.blocked || {})) {
      const [source, target] = id.split(">");
      const from = byId.get(source);
      if (!from || !(Number(count) > 0)) continue;
      const to = byId.get(target) || null;
      const y0 = (from.y0 + from.y1) / 2;
      const x0 = from.x1;
      const x1 = to ? to.x0 : x0 + 40;
      const y1 = to ? (to.y0 + to.y1) / 2 : y0;
      const mx = (x0 + x1) / 2;
      items.push({
        id,
        count: Number(count),
        d: `M${x0},${y0}C${mx},${y0} ${mx},${y1} ${x1},${y1}`,
        tx: to ? mx : x1 + 6,
        ty: to ? (y0 + y1) / 2 : y0,
      });
    }
    const groups = this.gBlocked
      .selectAll("g.blocked:not(.exiting)")
      .data(items, (/** @type {any} */ d) => d.id)
      .join(
        (enter) => {
          const g = enter.append("g").attr("class", "blocked");
          g.append("path").attr("class", "blocked-link");
          g.append("text").attr("class", "blocked-count").attr("dy", "-0.3em");
          return g;
        },
        (update) => update,
        (exit) => exit.classed("exiting", true).transition(tween).style("opacity", 0).remove(),
      );
    groups.select("path").attr("d", (d) => d.d);
    groups
      .select("text")
      .attr("x", (d) => d.tx)
      .attr("y", (d) => d.ty)
      .style("font-size", `${Math.round(font * 0.8)}px`)
      .text((d) => t("kiosk.blocked", { n: formatCount(d.count) }));
  }

  /** Column headings above the three columns. */
  #heads(nodes, font, top) {
    const xs = [null, null, null];
    for (const n of nodes) if (xs[n.layer] === null) xs[n.layer] = n.layer === 0 ? n.x1 : n.x0;
    const heads = [
      { key: "d", text: t("sankey.column.devices"), x: xs[0], anchor: "end" },
      { key: "o", text: t("sankey.column.companies"), x: xs[1], anchor: "start" },
      { key: "c", text: t("sankey.column.countries"), x: xs[2], anchor: "start" },
    ].filter((h) => h.x !== null);
    this.gHeads
      .selectAll("text")
      .data(heads, (/** @type {any} */ d) => d.key)
      .join("text")
      .attr("class", (d) => `head ${d.key}`)
      .attr("x", (d) => d.x)
      .attr("y", Math.round(top * 0.5))
      .attr("text-anchor", (d) => d.anchor)
      .style("font-size", `${Math.round(font * 0.95)}px`)
      .text((d) => d.text);
  }
}

/** Order within a column: the "other" node last, then by label, then by id (stable). */
function compareNodes(a, b) {
  if (Boolean(a.other) !== Boolean(b.other)) return a.other ? 1 : -1;
  const la = String(a.label || "").toLowerCase();
  const lb = String(b.label || "").toLowerCase();
  if (la !== lb) return la < lb ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** " dev-cN" for a device node (its colour, shared with the phone page), else "". */
function colourClass(n) {
  return n.kind === "device" && n.device ? ` ${deviceClass(n.device, n.colour)}` : "";
}

/** The largest number of nodes in one column. */
function maxColumn(nodes) {
  const counts = [0, 0, 0];
  for (const n of nodes) counts[COLUMN[n.kind] ?? 0] += 1;
  return Math.max(1, ...counts);
}

const OTHER = { device: "sankey.other.devices", org: "sankey.other.companies", country: "sankey.other.places" };

/** What a node is called on screen: the server's label, but the page's own words in its language. */
function labelText(n) {
  let label = n.label;
  if (n.other && OTHER[n.kind]) label = t(OTHER[n.kind]);
  else if (n.kind === "org" && n.hidden && Object.hasOwn(HIDDEN, n.hidden)) label = t(HIDDEN[n.hidden]);
  else if (n.kind === "country") label = n.id === "c:unknown" ? t("place.unknown") : countryName(n.country, n.label);
  const name = clip(label, n.kind === "device" ? 24 : 20);
  return n.tracker ? `⚠ ${name}` : name;
}

/** The node's amount in the current metric. */
function amountText(n, metric) {
  return metric === "bytes" ? formatBytes(n.bytes) : formatCount(n.connections);
}

function labelTransform(d, spots) {
  const spot = spots.get(d.id);
  const x = spot ? spot.x : d.layer === 0 ? d.x0 - 12 : d.x1 + 12;
  const y = spot ? spot.y : (d.y0 + d.y1) / 2;
  return `translate(${x.toFixed(1)},${y.toFixed(1)})`;
}
