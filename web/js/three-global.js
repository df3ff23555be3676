/**
 * Puts the pinned three.js (web/package.json) on `window.THREE`, before globe.gl's UMD file runs.
 *
 * Why: globe.gl's ES module build imports a tree of bare names ("three", "three-globe", "kapsule",
 * d3 packages, ...) that a browser resolves only through an import map, and an import map is an
 * inline script the pages' Content-Security-Policy forbids. Its UMD file needs nothing, and every
 * part of it (renderer, layers, materials) takes `window.THREE` when there is one instead of the
 * copy of three bundled inside it. three's own ES build has relative imports only
 * (three.module.js -> ./three.core.js), so it loads as a plain module from /vendor/. globe.js
 * imports this file before it adds globe.gl's script, when the globe is first shown.
 */

import * as THREE from "/vendor/three.module.js";

/** @type {any} */ (globalThis).THREE = THREE;
