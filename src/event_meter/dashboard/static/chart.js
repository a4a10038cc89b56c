// The series chart: one SVG bar per bucket, stacked by status, drawn with DOM
// methods (no library, nothing fetched). Bucket groups carry data-bucket and
// data-count, and the svg data-every, for tests and for tooltips.

import { formatNumber, svg } from "./format.js";

const STACK = [
  ["success_count", "bar-success"],
  ["failure_count", "bar-failure"],
  ["skipped_count", "bar-skipped"],
];

function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function bucketLabel(bucket, every) {
  // "2026-05-06T10:15:00Z": minutes show HH:MM, hours MM-DD HH:00
  return every === "hour" ? `${bucket.slice(5, 10)} ${bucket.slice(11, 13)}:00` : bucket.slice(11, 16);
}

export function renderChart(container, caption, rows, every) {
  const width = 800;
  const height = 240;
  const pad = { left: 46, right: 10, top: 10, bottom: 24 };
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;
  const base = pad.top + plotHeight;
  const top = niceCeiling(Math.max(1, ...rows.map((row) => row.count)));
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `events per ${every}`,
    "data-every": every,
    "data-buckets": rows.length,
  });
  const ticks = Number.isInteger(top / 2) ? [0, top / 2, top] : [0, top];
  for (const tick of ticks) {
    const y = base - (tick / top) * plotHeight;
    root.append(svg("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y, y2: y }));
    root.append(svg("text", { class: "axis", x: pad.left - 6, y: y + 4, "text-anchor": "end" }, formatNumber(tick)));
  }
  const slot = plotWidth / Math.max(1, rows.length);
  const barWidth = Math.max(1, slot * 0.8);
  rows.forEach((row, position) => {
    const x = pad.left + position * slot + (slot - barWidth) / 2;
    const group = svg("g", { class: "bucket", "data-bucket": row.bucket, "data-count": row.count });
    group.append(
      svg(
        "title",
        {},
        `${row.bucket}: ${row.count} events (${row.success_count} success, ` +
          `${row.failure_count} failure, ${row.skipped_count} skipped)`,
      ),
    );
    let y = base;
    for (const [key, cls] of STACK) {
      const barHeight = (row[key] / top) * plotHeight;
      if (barHeight <= 0) continue;
      y -= barHeight;
      group.append(svg("rect", { class: cls, x, y, width: barWidth, height: barHeight }));
    }
    root.append(group);
  });
  const labelled = new Set([0, Math.floor((rows.length - 1) / 2), rows.length - 1]);
  for (const position of labelled) {
    if (position < 0 || position >= rows.length) continue;
    const x = pad.left + position * slot + slot / 2;
    root.append(
      svg("text", { class: "axis", x, y: height - 6, "text-anchor": "middle" }, bucketLabel(rows[position].bucket, every)),
    );
  }
  container.replaceChildren(root);
  const total = rows.reduce((sum, row) => sum + row.count, 0);
  const range = rows.length ? `${rows.length} buckets from ${rows[0].bucket}` : "no buckets";
  caption.textContent = `events per ${every}: ${formatNumber(total)} in ${range}`;
}
