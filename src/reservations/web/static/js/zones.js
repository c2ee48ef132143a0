// Wall time in a resource's IANA zone with nothing but Intl: day bounds (23 or 25 hours on a
// DST day), offsets, hour ticks and formatting. Instants are epoch milliseconds.

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const partsCache = new Map();

function partsFormat(zone) {
  let f = partsCache.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: zone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    partsCache.set(zone, f);
  }
  return f;
}

export function wallParts(zone, ms) {
  const out = {};
  for (const p of partsFormat(zone).formatToParts(new Date(ms))) {
    if (p.type !== "literal") out[p.type] = Number(p.value);
  }
  return out; // year, month, day, hour, minute, second
}

// Minutes the zone is ahead of UTC at this instant.
export function offsetMinutes(zone, ms) {
  const p = wallParts(zone, ms);
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return Math.round((asUtc - Math.floor(ms / 1000) * 1000) / MINUTE);
}

const pad = (n) => String(n).padStart(2, "0");

export function localDate(zone, ms) {
  const p = wallParts(zone, ms);
  return `${p.year}-${pad(p.month)}-${pad(p.day)}`;
}

export function addDays(dateStr, days) {
  const [y, m, d] = dateStr.split("-").map(Number);
  const t = new Date(Date.UTC(y, m - 1, d + days));
  return `${t.getUTCFullYear()}-${pad(t.getUTCMonth() + 1)}-${pad(t.getUTCDate())}`;
}

// The first instant (to the minute) whose local date is dateStr: local midnight, or the end
// of a gap where a zone skips midnight.
export function dayStart(zone, dateStr) {
  const [y, m, d] = dateStr.split("-").map(Number);
  const utcMidnight = Date.UTC(y, m - 1, d);
  let lo = (utcMidnight - 15 * HOUR) / MINUTE;
  let hi = (utcMidnight + 15 * HOUR) / MINUTE;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (localDate(zone, mid * MINUTE) >= dateStr) hi = mid;
    else lo = mid + 1;
  }
  return lo * MINUTE;
}

export function dayBounds(zone, dateStr) {
  return { start: dayStart(zone, dateStr), end: dayStart(zone, addDays(dateStr, 1)) };
}

// The instant of a wall time (minutes after local midnight of dateStr). A time in a DST gap
// is read with the offset before the gap, as the API does (02:30 becomes 03:30).
export function wallToInstant(zone, dateStr, minutes) {
  const [y, m, d] = dateStr.split("-").map(Number);
  const naive = Date.UTC(y, m - 1, d) + minutes * MINUTE;
  const first = offsetMinutes(zone, naive - 14 * HOUR);
  const guess = naive - first * MINUTE;
  const second = offsetMinutes(zone, guess);
  if (second === first) return guess;
  const other = naive - second * MINUTE;
  return offsetMinutes(zone, other) === second ? other : guess;
}

// Snap an instant to a grid of `grid` wall-clock minutes from local midnight.
export function snap(zone, bounds, ms, grid) {
  const drift = offsetMinutes(zone, ms) - offsetMinutes(zone, bounds.start);
  const wall = (ms - bounds.start) / MINUTE + drift;
  const snapped = Math.round(wall / grid) * grid;
  return bounds.start + (snapped - drift) * MINUTE;
}

// Every instant of [start, end) where the local clock shows a whole hour.
export function hourTicks(zone, bounds) {
  const ticks = [];
  for (let t = bounds.start; t < bounds.end; t += 15 * MINUTE) {
    const p = wallParts(zone, t);
    if (p.minute === 0) ticks.push({ ms: t, hour: p.hour });
  }
  return ticks;
}

export function formatTime(zone, ms) {
  const p = wallParts(zone, ms);
  return `${pad(p.hour)}:${pad(p.minute)}`;
}

export function formatDay(dateStr, locale) {
  const [y, m, d] = dateStr.split("-").map(Number);
  return new Intl.DateTimeFormat(locale, {
    timeZone: "UTC",
    weekday: "short",
    day: "numeric",
    month: "short",
  }).format(new Date(Date.UTC(y, m - 1, d)));
}

export function zoneAbbreviation(zone, ms) {
  const part = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "short" })
    .formatToParts(new Date(ms))
    .find((p) => p.type === "timeZoneName");
  return part ? part.value : zone;
}

// A typed 24-hour wall time ("13:00", "1300", "9:30", "9") -> minutes; null if malformed.
export function parseClock(value) {
  const m = /^(\d{1,2})(?::?(\d{2}))?$/.exec((value || "").trim());
  if (!m) return null;
  const hours = Number(m[1]);
  const minutes = Number(m[2] || 0);
  if (minutes > 59 || hours * 60 + minutes > 24 * 60) return null;
  return hours * 60 + minutes;
}

export { MINUTE, HOUR };
