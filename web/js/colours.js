/**
 * One colour per device, the same on the kiosk and on that device's own phone page.
 *
 * The server picks it (`colour` on the view's devices and device nodes, and on `/api/me`): the
 * first colour from a hash of the public id that no other present phone has, so four phones get
 * four colours, and the pseudonym's colour word ("Orange Fox") names that very colour. A visitor
 * who sees "This is you" in orange on the phone finds the orange bar on the big screen. Without a
 * server colour (an older recording) both pages fall back to the same small hash of the id. The colours
 * themselves live in base.css (`.dev-c0` … set `--dev`), chosen to stay clear of the company (sky),
 * country (green) and tracker (vermillion) colours; pages use classes, never inline styles, which
 * the pages' Content-Security-Policy would refuse.
 */

/** How many device colours base.css defines (`.dev-c0` … `.dev-c6`). */
export const DEVICE_COLOURS = 7;

/**
 * The palette index for a device id (FNV-1a over its UTF-16 code units).
 * @param {string} id the device's public id, e.g. "d90d27dd1b91a"
 * @returns {number} 0 … DEVICE_COLOURS - 1
 */
export function deviceColourIndex(id) {
  let h = 0x811c9dc5;
  const text = String(id ?? "");
  for (let i = 0; i < text.length; i += 1) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % DEVICE_COLOURS;
}

/**
 * The CSS class that gives an element (and its children) the device's colour as `--dev`.
 * @param {string} id
 * @param {unknown} [colour] the server's palette index for the device, when it sent one
 * @returns {string}
 */
export function deviceClass(id, colour) {
  const index = Number.isInteger(colour) && Number(colour) >= 0 && Number(colour) < DEVICE_COLOURS ? Number(colour) : deviceColourIndex(id);
  return `dev-c${index}`;
}
