/**
 * The kiosk's join card: the visitors' Wi-Fi name and two QR codes (join the Wi-Fi, open the phone
 * page). The server renders the codes as PNG (`/join/*.png`); this module only asks `/api/join`
 * what is configured and fills the card. Text goes in with textContent, never as markup; the alt
 * texts follow the kiosk's language (`data-i18n-alt`).
 */

import { t } from "./i18n.js";

/**
 * A QR image before the figure's caption; made only when configured, so a kiosk without a card
 * holds no images at all.
 * @param {HTMLElement} figure
 * @param {string} src
 * @param {string} altKey catalogue key of the alt text
 */
function addCode(figure, src, altKey) {
  const img = document.createElement("img");
  img.width = 160;
  img.height = 160;
  img.dataset.i18nAlt = altKey;
  img.alt = t(altKey);
  img.src = src;
  figure.prepend(img);
}

/**
 * @param {HTMLElement} card the `#join` element of index.html
 */
export async function showJoinCard(card) {
  let info;
  try {
    const resp = await fetch("/api/join", { cache: "no-cache" });
    if (!resp.ok) return;
    info = await resp.json();
  } catch {
    return; // no card is better than a broken one
  }
  if (!info.ssid && !info.phone_qr) return;
  const wifi = card.querySelector("#join-wifi");
  const phone = card.querySelector("#join-phone");
  if (info.ssid && info.wifi_qr) {
    card.querySelector("#join-ssid").textContent = info.ssid;
    addCode(wifi, info.wifi_qr, "join.wifiCode");
    wifi.hidden = false;
  }
  if (info.phone_qr && info.phone_url) {
    card.querySelector("#join-url").textContent = info.phone_url;
    addCode(phone, info.phone_qr, "join.phoneCode");
    phone.hidden = false;
  }
  card.hidden = false;
}

const card = document.getElementById("join");
if (card) showJoinCard(card);
