/**
 * The third-party libraries, as the rest of the code imports them.
 *
 * Why globals: d3, d3-sankey and topojson-client ship prebuilt UMD files; their ES sources use bare
 * imports ("d3-array") that a browser cannot resolve without an import map, and an import map would
 * be an inline script, which the Content-Security-Policy forbids. So the pages load the UMD files
 * with `<script defer src="/vendor/...">` before this module, and this is the one place that reads
 * the globals they define: no build step, and every other module stays a plain ES module.
 */

/** @type {any} */
export const d3 = globalThis.d3;
/** @type {any} */
export const topojson = globalThis.topojson;

/**
 * Throws a readable error when a vendored file is missing (usually: `npm ci --prefix web` not run).
 * @param {...string} needs names among "d3", "sankey", "topojson"
 */
export function requireVendor(...needs) {
  const missing = needs.filter((name) => {
    if (name === "d3") return !d3;
    if (name === "sankey") return !(d3 && typeof d3.sankey === "function");
    if (name === "topojson") return !topojson;
    return false;
  });
  if (missing.length) {
    throw new Error(`apviz: missing ${missing.join(", ")} (run "npm ci --prefix web" on the server)`);
  }
}
