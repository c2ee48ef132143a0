// Draws the day: one row per resource, in that resource's own time zone. Pure DOM output;
// interact.js handles the pointer and the keyboard.
import { formatTime, hourTicks, zoneAbbreviation, MINUTE } from "./zones.js";

export const PX_PER_MINUTE = 1; // 60 px per hour: a 24-hour day is 1440 px wide

const BLOCK_CLASS = {
  "outside-opening-hours": ["closed", "Closed"],
  "too-far-ahead": ["closed", "Not bookable yet"],
  "in-blackout": ["blackout", "Blackout"],
  buffer: ["buffer", "Turnover"],
  "too-soon": ["past", "Too soon"],
  "in-the-past": ["past", "Past"],
  "in-history": ["past", "Past"],
  "booker-limit": ["closed", "Your limit is reached"],
  taken: ["taken", "Booked (not shown to your key)"],
};
// "booked" ranges include the bookings' own turnover: what is left of them after the bookings
// this key can see is drawn as turnover next to a booking, else as taken by someone else.
function withTurnover(blocks, reservations) {
  const out = [];
  for (const b of blocks) {
    if (b.reason !== "booked") {
      out.push(b);
      continue;
    }
    let pieces = [[b.startMs, b.endMs]];
    for (const r of reservations) {
      pieces = pieces.flatMap(([a, z]) =>
        r.endMs <= a || r.startMs >= z ? [[a, z]] : [[a, r.startMs], [r.endMs, z]].filter(([p, q]) => q > p));
    }
    for (const [a, z] of pieces) {
      const touches = reservations.some((r) => r.startMs === z || r.endMs === a);
      out.push({ ...b, startMs: a, endMs: z, reason: touches ? "buffer" : "taken", detail: "" });
    }
  }
  return out;
}

const STATUS_TEXT = { held: "Held", pending: "Pending approval", confirmed: "Confirmed" };
// Shown, but not live: their time is free again.
const ENDED_TEXT = { no_show: "No-show" };

export function x(row, ms) {
  return ((ms - row.bounds.start) / MINUTE) * PX_PER_MINUTE;
}

export function instantAt(row, px) {
  return row.bounds.start + (px / PX_PER_MINUTE) * MINUTE;
}

function place(el, left, width) {
  el.style.setProperty("left", `${left}px`);
  el.style.setProperty("width", `${Math.max(width, 2)}px`);
}

function div(cls, text) {
  const el = document.createElement("div");
  el.className = cls;
  if (text) el.textContent = text;
  return el;
}

// Overlapping bookings of a pooled resource side by side: greedy lanes by start.
function lanes(reservations) {
  const ends = [];
  const out = new Map();
  for (const r of [...reservations].sort((a, b) => a.startMs - b.startMs)) {
    let lane = ends.findIndex((end) => end <= r.startMs);
    if (lane < 0) lane = ends.push(0) - 1;
    ends[lane] = r.endMs;
    out.set(r.id, lane);
  }
  return { of: out, count: Math.max(ends.length, 1) };
}

export function describe(row, r) {
  const zone = row.resource.timezone;
  const parts = [STATUS_TEXT[r.status] || ENDED_TEXT[r.status] || r.status, `${formatTime(zone, r.startMs)}–${formatTime(zone, r.endMs)}`];
  if (r.checked_in_at) parts.push("checked in");
  if (r.customer) parts.push(r.customer);
  if (r.quantity > 1) parts.push(`${r.quantity} units`);
  if (r.flagged) parts.push(`flagged by a policy change: ${flagText(r)}`);
  return parts.join(", ");
}

// What a policy change found wrong with a booking (`flagged`, set by PATCH ?affected=flag).
export function flagText(r) {
  return r.flagged.violations.map((v) => v.detail).join("; ");
}

function bookingButton(row, r, lane, laneCount) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = `booking ${r.status}${r.flagged ? " flagged" : ""}`;
  el.dataset.id = r.id;
  const zone = row.resource.timezone;
  const label = document.createElement("span");
  label.textContent = `${r.checked_in_at ? "✓ " : ""}${r.flagged ? "\u2691 " : ""}${formatTime(zone, r.startMs)}–${formatTime(zone, r.endMs)}${r.customer ? ` ${r.customer}` : ""}`;
  el.append(label);
  el.setAttribute("aria-label", `${describe(row, r)}. Enter opens it.`);
  el.title = describe(row, r);
  const left = x(row, Math.max(r.startMs, row.bounds.start));
  const right = x(row, Math.min(r.endMs, row.bounds.end));
  place(el, left, right - left);
  el.style.setProperty("top", `calc(var(--lane-top) + ${lane} * var(--lane-space) / ${laneCount})`);
  el.style.setProperty("height", `calc(var(--lane-space) / ${laneCount} - 2px)`);
  return el;
}

function rowLabel(row) {
  const r = row.resource;
  const hours = Math.round((row.bounds.end - row.bounds.start) / (60 * MINUTE));
  const label = div("row-label");
  label.id = `label-${r.id}`;
  const name = div("name", r.name);
  const zone = div("zone", `${r.timezone} · ${zoneAbbreviation(r.timezone, row.bounds.start)}`);
  label.append(name, zone);
  const facts = [];
  if (r.capacity > 1) facts.push(`capacity ${r.capacity}`);
  if (hours !== 24) facts.push(`${hours}-hour day (clock change)`);
  if (r.policy && r.policy.requires_approval) facts.push("needs approval");
  if (facts.length) label.append(div("facts", facts.join(" · ")));
  return label;
}

// Build (or rebuild) one resource's row element.
export function renderRow(row, { now, selection, dateLabel }) {
  const r = row.resource;
  const zone = r.timezone;
  const el = row.el || div("row");
  row.el = el;
  el.replaceChildren();
  el.dataset.resourceId = r.id;
  el.setAttribute("role", "group");
  el.setAttribute("aria-labelledby", `label-${r.id}`);

  const track = div("track");
  row.track = track;
  track.tabIndex = 0;
  track.dataset.resourceId = r.id;
  track.setAttribute(
    "aria-label",
    `${r.name}, ${dateLabel}, times in ${zone}. Arrow keys pick a time, Shift with arrows changes its length, Enter holds it.`,
  );
  track.style.setProperty("width", `${x(row, row.bounds.end)}px`);

  for (const tick of hourTicks(zone, row.bounds)) {
    const t = div(tick.hour === 0 ? "tick midnight" : "tick");
    t.style.setProperty("left", `${x(row, tick.ms)}px`);
    const text = div("tick-label", String(tick.hour).padStart(2, "0"));
    t.append(text);
    track.append(t);
  }
  const live = row.reservations.filter((res) => STATUS_TEXT[res.status]);
  for (const b of withTurnover(row.blocks, live)) {
    const [cls, text] = BLOCK_CLASS[b.reason] || [];
    if (!cls) continue;
    const block = div(`block ${cls}`);
    block.title = `${text} ${formatTime(zone, b.startMs)}–${formatTime(zone, b.endMs)}${b.detail ? `: ${b.detail}` : ""}`;
    block.dataset.reason = b.reason;
    place(block, x(row, b.startMs), x(row, b.endMs) - x(row, b.startMs));
    track.append(block);
  }
  if (now > row.bounds.start) {
    const past = div("block past-time");
    past.title = "Past";
    place(past, 0, x(row, Math.min(now, row.bounds.end)));
    track.append(past);
  }
  const shown = row.reservations.filter((res) => STATUS_TEXT[res.status] || ENDED_TEXT[res.status]);
  const laneInfo = lanes(shown);
  if (laneInfo.count > 2) {
    // pooled resources: a taller row, so that overlapping bookings stay readable
    track.style.setProperty("--lane-space", `${laneInfo.count * 1.15}rem`);
    track.style.setProperty("height", `calc(var(--lane-top) + ${laneInfo.count * 1.15}rem + 0.3rem)`);
  }
  for (const res of shown) {
    track.append(bookingButton(row, res, laneInfo.of.get(res.id), laneInfo.count));
  }
  if (now >= row.bounds.start && now < row.bounds.end) {
    const line = div("now-line");
    line.style.setProperty("left", `${x(row, now)}px`);
    line.title = `Now, ${formatTime(zone, now)}`;
    track.append(line);
  }
  if (selection && selection.resourceId === r.id) {
    const sel = div(`selection${selection.suggested ? " suggested" : ""}`);
    place(sel, x(row, selection.start), x(row, selection.end) - x(row, selection.start));
    sel.textContent = `${formatTime(zone, selection.start)}–${formatTime(zone, selection.end)}`;
    track.append(sel);
    track.setAttribute("aria-description", `Selected ${sel.textContent}`);
  }
  el.append(rowLabel(row), track);
  return el;
}

// Show the selection on a track without rebuilding the row (while dragging).
export function drawSelection(row, selection) {
  let sel = row.track.querySelector(".selection");
  if (!selection) {
    if (sel) sel.remove();
    return;
  }
  if (!sel) {
    sel = div("selection");
    row.track.append(sel);
  }
  const zone = row.resource.timezone;
  place(sel, x(row, selection.start), x(row, selection.end) - x(row, selection.start));
  sel.textContent = `${formatTime(zone, selection.start)}–${formatTime(zone, selection.end)}`;
}
