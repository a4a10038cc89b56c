// DOM building, number and time formatting for the dashboard. Everything that
// puts text on the page goes through textContent or setAttribute: stored names
// and values never become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

export const BUCKET_MS = { minute: 60_000, hour: 3_600_000 };

export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  node.append(...children); // strings become text nodes
  return node;
}

export function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

export function formatNumber(value) {
  if (value === null || value === undefined) return "–";
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  if (value !== 0 && Math.abs(value) < 0.01) return value.toExponential(2);
  return value.toLocaleString("en-US", { maximumFractionDigits: 3 });
}

export function formatChange(value) {
  if (value === null || value === undefined) return "–";
  return (value > 0 ? "+" : "") + formatNumber(value);
}

// "2026-05-06T10:15:05.123000Z" -> epoch ms (Date.parse wants at most 3 fraction digits)
export function parseTime(text) {
  return Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
}

export function isoTime(ms) {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}

export function floorTo(ms, size) {
  return Math.floor(ms / size) * size;
}
