// Pointer and keyboard on the timeline: drag across free time to hold it, drag a booking to
// move it, click or Enter to open one; arrow keys pick a time on a focused row.
import { instantAt, x, PX_PER_MINUTE } from "./timeline.js";
import { snap, wallToInstant, offsetMinutes, MINUTE } from "./zones.js";

const DRAG_THRESHOLD = 4; // px before a press becomes a drag
const MOVABLE = new Set(["held", "pending", "confirmed"]);

export function gridOf(row) {
  const g = row.resource.policy && row.resource.policy.slot_grid_minutes;
  return g && g > 0 ? g : 15;
}

function pointerInstant(row, event) {
  const rect = row.track.getBoundingClientRect();
  return instantAt(row, event.clientX - rect.left);
}

// A first selection on a row with no selection yet: the next slot from now today, else 09:00.
function defaultSelection(row, date, now) {
  const grid = gridOf(row);
  const length = Math.max(grid, 60);
  let start;
  if (now >= row.bounds.start && now < row.bounds.end) {
    start = snap(row.resource.timezone, row.bounds, now + grid * MINUTE / 2, grid);
  } else {
    start = wallToInstant(row.resource.timezone, date, 9 * 60);
  }
  start = Math.min(start, row.bounds.end - length * MINUTE);
  return { resourceId: row.resource.id, start, end: start + length * MINUTE };
}

export function attach(container, ctl) {
  let press = null; // the gesture in progress
  let swallowClick = false;

  container.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || !ctl.canWrite()) return;
    const track = event.target.closest(".track");
    if (!track) return;
    const row = ctl.row(track.dataset.resourceId);
    const bookingEl = event.target.closest(".booking");
    if (bookingEl) {
      const res = row.reservations.find((r) => r.id === bookingEl.dataset.id);
      if (!res || !MOVABLE.has(res.status)) return;
      press = { kind: "move", row, el: bookingEl, res, x0: event.clientX, dragging: false, start: res.startMs };
      bookingEl.setPointerCapture(event.pointerId);
    } else {
      const anchor = snap(row.resource.timezone, row.bounds, pointerInstant(row, event), gridOf(row));
      press = { kind: "select", row, x0: event.clientX, anchor, dragging: false, sel: null };
      track.setPointerCapture(event.pointerId);
      event.preventDefault(); // no text selection while dragging
    }
  });

  container.addEventListener("pointermove", (event) => {
    if (!press) return;
    const dx = event.clientX - press.x0;
    if (!press.dragging && Math.abs(dx) < DRAG_THRESHOLD) return;
    press.dragging = true;
    const { row } = press;
    const zone = row.resource.timezone;
    const grid = gridOf(row);
    if (press.kind === "move") {
      const wanted = press.res.startMs + (dx / PX_PER_MINUTE) * MINUTE;
      press.start = snap(zone, row.bounds, wanted, grid);
      press.el.classList.add("dragging");
      press.el.style.setProperty("left", `${x(row, press.start)}px`);
    } else {
      const here = snap(zone, row.bounds, pointerInstant(row, event), grid);
      // Past time is shaded and not bookable: a selection starts at the next grid slot.
      const firstSlot = snap(zone, row.bounds, Date.now() + (grid * MINUTE) / 2, grid);
      const start = Math.max(Math.min(press.anchor, here), row.bounds.start, firstSlot);
      let end = Math.min(Math.max(press.anchor, here), row.bounds.end);
      if (end <= start) end = start + grid * MINUTE;
      press.sel = { resourceId: row.resource.id, start, end };
      ctl.preview(press.sel);
    }
  });

  const finish = (event, cancelled) => {
    if (!press) return;
    const p = press;
    press = null;
    if (p.kind === "move") {
      if (!p.dragging) return; // a click: the click handler opens it
      swallowClick = true;
      const duration = p.res.endMs - p.res.startMs;
      if (cancelled || p.start === p.res.startMs) ctl.redraw(p.row);
      else ctl.move(p.res, p.start, p.start + duration);
      return;
    }
    if (cancelled) {
      ctl.select(null);
      return;
    }
    if (p.dragging && p.sel) {
      ctl.hold(p.sel);
    } else {
      const grid = gridOf(p.row);
      ctl.select({ resourceId: p.row.resource.id, start: p.anchor, end: p.anchor + grid * MINUTE });
      p.row.track.focus({ preventScroll: true });
    }
  };
  container.addEventListener("pointerup", (event) => finish(event, false));
  container.addEventListener("pointercancel", (event) => finish(event, true));

  container.addEventListener("click", (event) => {
    const bookingEl = event.target.closest(".booking");
    if (!bookingEl) return;
    if (swallowClick) {
      swallowClick = false;
      return;
    }
    const row = ctl.row(bookingEl.closest(".track").dataset.resourceId);
    const res = row.reservations.find((r) => r.id === bookingEl.dataset.id);
    if (res) ctl.open(res);
  });

  container.addEventListener("keydown", (event) => {
    const track = event.target;
    if (!track.classList || !track.classList.contains("track")) return;
    const row = ctl.row(track.dataset.resourceId);
    const grid = gridOf(row) * MINUTE;
    const current = ctl.selection();
    let sel = current && current.resourceId === row.resource.id ? { ...current } : null;
    const length = sel ? sel.end - sel.start : 0;
    switch (event.key) {
      case "ArrowRight":
      case "ArrowLeft": {
        const dir = event.key === "ArrowRight" ? 1 : -1;
        if (!sel) sel = defaultSelection(row, ctl.date(), Date.now());
        else if (event.shiftKey) sel.end = Math.max(sel.start + grid, sel.end + dir * grid);
        else {
          sel.start += dir * grid;
          sel.end += dir * grid;
        }
        if (sel.start < row.bounds.start || sel.end > row.bounds.end) return event.preventDefault();
        break;
      }
      case "Home":
      case "End":
        if (!sel) sel = defaultSelection(row, ctl.date(), Date.now());
        {
          const len = sel.end - sel.start;
          sel.start = event.key === "Home" ? row.bounds.start : row.bounds.end - len;
          sel.end = sel.start + len;
        }
        break;
      case "ArrowUp":
      case "ArrowDown": {
        const rows = ctl.rows();
        const next = rows[rows.indexOf(row) + (event.key === "ArrowDown" ? 1 : -1)];
        event.preventDefault();
        if (!next) return;
        if (sel) {
          // the same wall-clock time on the other row, in its own zone
          const wall = (sel.start - row.bounds.start) / MINUTE +
            offsetMinutes(row.resource.timezone, sel.start) - offsetMinutes(row.resource.timezone, row.bounds.start);
          const start = wallToInstant(next.resource.timezone, ctl.date(), wall);
          ctl.select({ resourceId: next.resource.id, start, end: start + length });
        }
        next.track.focus();
        return;
      }
      case "Enter":
        if (sel) {
          event.preventDefault();
          ctl.hold(sel);
        }
        return;
      case "Escape":
        ctl.select(null);
        return;
      default:
        return;
    }
    event.preventDefault();
    ctl.select(sel);
  });
}
