/**
 * Labels that do not pile up: a greedy placement by importance.
 *
 * Why greedy: with tens of labels and a handful of candidate spots each, trying them in order of
 * traffic and keeping the first spot that overlaps nothing placed before is fast (well under a
 * millisecond) and guarantees the biggest items are always named. Widths are measured on a canvas
 * (`measureText`), which never forces a layout of the page.
 */

/**
 * @typedef {{key: string, x: number, y: number, text: string, priority: number,
 *            offsets?: Array<[number, number, string]>, bold?: boolean}} LabelRequest
 *   x/y: the anchor point; offsets: candidate [dx, dy, text-anchor] spots, tried in order; bold:
 *   this label is set in bold.
 * @typedef {{key: string, x: number, y: number, anchor: string}} LabelSpot
 */

const DEFAULT_OFFSETS = [
  [12, 0, "start"],
  [-12, 0, "end"],
  [0, -18, "middle"],
  [0, 22, "middle"],
];

/**
 * Choose spots for at most `max` labels inside `bounds`, most important first.
 * @param {LabelRequest[]} requests
 * @param {{fontSize: number, max?: number, bounds?: [number, number, number, number],
 *          blocked?: Array<[number, number, number, number]>, bold?: boolean}} opts
 *   bounds: [x0, y0, x1, y1]; blocked: rectangles (same form) no label may cover; bold: the
 *   labels are set in bold (measured so).
 * @returns {Map<string, LabelSpot>}
 */
export function placeLabels(requests, opts) {
  const { fontSize, max = Infinity, bounds = null, blocked = [], bold = false } = opts;
  const placed = blocked.map((r) => r.slice());
  const out = new Map();
  const ordered = requests.slice().sort((a, b) => b.priority - a.priority || (a.key < b.key ? -1 : 1));
  const h = fontSize * 1.15;
  for (const req of ordered) {
    if (out.size >= max) break;
    const w = estimateWidth(req.text, fontSize, req.bold ?? bold);
    for (const [dx, dy, anchor] of req.offsets || DEFAULT_OFFSETS) {
      const x = req.x + dx;
      const y = req.y + dy;
      const x0 = anchor === "start" ? x : anchor === "end" ? x - w : x - w / 2;
      const box = [x0 - 3, y - h / 2 - 2, x0 + w + 3, y + h / 2 + 2];
      if (bounds && (box[0] < bounds[0] || box[1] < bounds[1] || box[2] > bounds[2] || box[3] > bounds[3])) {
        continue;
      }
      if (placed.some((p) => overlaps(p, box))) continue;
      placed.push(box);
      out.set(req.key, { key: req.key, x, y, anchor });
      break;
    }
  }
  return out;
}

/** A canvas context for measuring text (no page layout is forced), or null outside a page. */
let measurer = /** @type {CanvasRenderingContext2D|null|undefined} */ (undefined);
const FACE = '"DejaVu Sans", "Liberation Sans", "Noto Sans", system-ui, sans-serif';

/**
 * Width of a line of text in the page's sans-serif face: measured on a canvas when there is one
 * (exact for the fonts the kiosk really has: an estimate let "United Kingdom" run onto the exhibit's
 * mark and country names past the sankey's edge), else estimated from the characters.
 * @param {string} text
 * @param {number} fontSize
 * @param {boolean} [bold]
 */
export function estimateWidth(text, fontSize, bold = false) {
  if (measurer === undefined) {
    measurer = typeof document !== "undefined" ? document.createElement("canvas").getContext("2d") : null;
  }
  if (measurer) {
    measurer.font = `${bold ? "700 " : ""}${fontSize}px ${FACE}`;
    return measurer.measureText(text).width;
  }
  let units = 0;
  for (const ch of text) {
    if ("il.,:;'|!".includes(ch)) units += 0.3;
    else if ("MWmw@".includes(ch)) units += 0.85;
    else if (ch >= "A" && ch <= "Z") units += 0.68;
    else units += 0.56;
  }
  return units * fontSize * (bold ? 1.08 : 1);
}

/** @param {number[]} a @param {number[]} b */
function overlaps(a, b) {
  return a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
}
