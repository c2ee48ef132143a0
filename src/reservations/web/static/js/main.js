// The booking page: sign-in, the day's rows, actions, the finder and live updates.
import { Api, ApiError, ifMatch } from "./api.js";
import { BookingDialog } from "./dialog.js";
import { attachFinder } from "./finder.js";
import { attach, gridOf } from "./interact.js";
import { EventStream } from "./live.js";
import { clearAlternatives, showAlternatives } from "./offers.js";
import { poolGroup, poolOf } from "./pools.js";
import { explain } from "./problems.js";
import { forgetKey, storedKey, storeKey } from "./session.js";
import { describe, drawSelection, renderRow, x } from "./timeline.js";
import {
  addDays, dayBounds, formatDay, formatTime, localDate, parseClock, wallToInstant,
} from "./zones.js";

const $ = (id) => document.getElementById(id);
const HOLD_SECONDS = 900;
const LIVE = ["held", "pending", "confirmed"];
const BROWSER_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

const state = {
  api: null,
  stream: null,
  poller: null,
  clockTimer: null,
  resources: [],
  rows: new Map(), // resource id -> row (resource, bounds, blocks, reservations, el, track)
  date: localDate(BROWSER_ZONE, Date.now()),
  selection: null,
  hold: null, // a hold made on this page, waiting for its Confirm
  refreshTimers: new Map(),
  generation: 0,
};

const iso = (ms) => new Date(ms).toISOString();

// ---- messages -----------------------------------------------------------------------------

function notice(text) {
  $("notice").textContent = text;
}

function problem(text) {
  if (!text) clearAlternatives();
  const p = $("problem");
  p.textContent = text || "";
  p.hidden = !text;
}

function fail(err, resource) {
  if (!(err instanceof ApiError)) throw err;
  problem(explain(err, resource));
}

// A refusal's alternatives as buttons; picking one books it (or moves `res` there).
function offerAlternatives(err, res) {
  const zoneOf = (id) => (state.resources.find((r) => r.id === id) || {}).timezone;
  showAlternatives(err.problem, {
    zoneOf,
    moving: Boolean(res),
    pick: async (resourceId, start, end) => {
      const done = res ? await move(res, start, end) : await createReservation(resourceId, start, end);
      if (done) await showDayOf(zoneOf(resourceId), start);
    },
  });
}

async function showDayOf(zone, start) {
  const date = localDate(zone || "UTC", start);
  if (date === state.date) return;
  state.date = date;
  state.selection = null;
  await loadDay();
  updateActionBar();
}

// ---- loading ------------------------------------------------------------------------------

function reservationOf(data) {
  return { ...data, startMs: Date.parse(data.start), endMs: Date.parse(data.end) };
}

async function fetchRow(resource, date) {
  const bounds = dayBounds(resource.timezone, date);
  const window = { from: iso(bounds.start), to: iso(bounds.end) };
  const [availability, reservations] = await Promise.all([
    state.api.get(`/v1/resources/${resource.id}/availability`, { ...window, explain: "true" }),
    state.api.get("/v1/reservations", new URLSearchParams([
      ["resource_id", resource.id], ["from", window.from], ["to", window.to], ["limit", "500"],
      ...[...LIVE, "no_show"].map((s) => ["status", s]),
    ])),
  ]);
  return {
    resource,
    bounds,
    blocks: (availability.data.unavailable || []).map((b) => ({
      ...b, startMs: Date.parse(b.start), endMs: Date.parse(b.end),
    })),
    reservations: reservations.data.items.map(reservationOf),
  };
}

function renderOptions() {
  return { now: Date.now(), selection: state.selection, dateLabel: formatDay(state.date) };
}

async function loadRow(resourceId) {
  const old = state.rows.get(resourceId);
  if (!old) return;
  const generation = state.generation;
  const fresh = await fetchRow(old.resource, state.date);
  if (generation !== state.generation) return; // the day changed meanwhile
  const row = state.rows.get(resourceId);
  const hadFocus = row.el && row.el.contains(document.activeElement) ? document.activeElement : null;
  const focusId = hadFocus && hadFocus.dataset.id;
  Object.assign(row, fresh);
  renderRow(row, renderOptions());
  if (hadFocus) {
    const again = focusId ? row.track.querySelector(`[data-id="${focusId}"]`) : row.track;
    (again || row.track).focus({ preventScroll: true });
  }
  syncHold(row);
}

function refreshSoon(resourceId) {
  clearTimeout(state.refreshTimers.get(resourceId));
  state.refreshTimers.set(resourceId, setTimeout(() => {
    state.refreshTimers.delete(resourceId);
    loadRow(resourceId).catch((err) => fail(err));
  }, 50));
}

async function loadResources() {
  const items = await state.api.all("/v1/resources");
  items.sort((a, b) => a.name.localeCompare(b.name));
  state.resources = items;
  const select = $("new-resource");
  const chosen = select.value;
  select.replaceChildren(...items.map((r) => {
    const o = document.createElement("option");
    o.value = r.id;
    o.textContent = `${r.name} (${r.timezone})`;
    return o;
  }));
  const group = poolGroup(items);
  if (group) select.append(group);
  if (chosen) select.value = chosen;
  updateZoneHint();
}

async function loadDay() {
  state.generation += 1;
  const generation = state.generation;
  $("day").value = state.date;
  const container = $("timeline");
  container.setAttribute("aria-busy", "true");
  const rows = await Promise.all(state.resources.map((r) => fetchRow(r, state.date)));
  if (generation !== state.generation) return;
  state.rows = new Map(rows.map((row) => [row.resource.id, row]));
  if (!rows.length) {
    const empty = document.createElement("p");
    empty.className = "help";
    empty.textContent = "No resources yet. Create some with POST /v1/resources, or run `reservations demo`.";
    container.replaceChildren(empty);
  } else {
    container.replaceChildren(...rows.map((row) => renderRow(row, renderOptions())));
  }
  container.setAttribute("aria-busy", "false");
  container.dataset.date = state.date; // the day drawn (tests wait for it)
  notice(`${formatDay(state.date)}: ${rows.length} resources.`);
}

// ---- selection, holds and the action bar --------------------------------------------------

function rowOf(id) {
  return state.rows.get(id);
}

function describeRange(resource, start, end) {
  const zone = resource.timezone;
  return `${resource.name}, ${formatDay(localDate(zone, start))} ${formatTime(zone, start)}–${formatTime(zone, end)} (${zone})`;
}

function select(sel) {
  const previous = state.selection;
  state.selection = sel;
  if (previous && (!sel || previous.resourceId !== sel.resourceId)) {
    const row = rowOf(previous.resourceId);
    if (row) drawSelection(row, null);
  }
  if (sel) {
    const row = rowOf(sel.resourceId);
    drawSelection(row, sel);
    const el = row.track.querySelector(".selection");
    el.classList.toggle("suggested", Boolean(sel.suggested));
    el.scrollIntoView({ block: "nearest", inline: "nearest" });
    row.track.setAttribute("aria-description", `Selected ${el.textContent}`);
  }
  updateActionBar();
}

function syncHold(row) {
  if (!state.hold || state.hold.resource_id !== row.resource.id) return;
  const now = row.reservations.find((r) => r.id === state.hold.id);
  if (now && now.status === "held") state.hold = now;
  else if (now || row.reservations.every((r) => r.id !== state.hold.id)) state.hold = null;
  updateActionBar();
}

function updateActionBar() {
  const bar = $("action-bar");
  const hold = state.hold;
  const sel = state.selection;
  $("action-hold").hidden = true;
  $("action-confirm").hidden = true;
  $("action-extend").hidden = true;
  $("action-release").hidden = true;
  if (hold) {
    const resource = rowOf(hold.resource_id).resource;
    const until = formatTime(resource.timezone, Date.parse(hold.expires_at));
    $("action-text").textContent = `Held: ${describeRange(resource, hold.startMs, hold.endMs)}, until ${until}. Confirm to keep it.`;
    $("action-confirm").hidden = false;
    $("action-extend").hidden = Date.parse(hold.expires_at) <= Date.now(); // only before it lapses
    $("action-release").hidden = false;
  } else if (sel) {
    const resource = rowOf(sel.resourceId).resource;
    $("action-text").textContent = `Selected: ${describeRange(resource, sel.start, sel.end)}.`;
    $("action-hold").hidden = false;
  }
  bar.hidden = !hold && !sel;
}

async function createReservation(resourceId, start, end, { confirmNow = false, customer, pool } = {}) {
  let row = rowOf(resourceId);
  const body = pool ? { pool, start: iso(start), end: iso(end) } : { resource_id: resourceId, start: iso(start), end: iso(end) };
  if (!confirmNow) body.hold_seconds = HOLD_SECONDS;
  if (customer) body.customer = customer;
  problem(null);
  try {
    const { data } = await state.api.post("/v1/reservations", body);
    if (pool) row = rowOf(data.resource_id); // the resource the pool chose
    const res = reservationOf(data);
    row.reservations = [...row.reservations.filter((r) => r.id !== res.id), res];
    state.selection = null;
    state.hold = res.status === "held" ? res : null;
    const what = { held: "Held", pending: "Requested (awaits an admin's approval)", confirmed: "Booked" }[res.status];
    notice(`${what}: ${describeRange(row.resource, start, end)}.`);
    renderRow(row, renderOptions());
    updateActionBar();
    refreshSoon(res.resource_id); // buffers and availability around it
    return res;
  } catch (err) {
    state.selection = null;
    renderRow(row, renderOptions()); // nothing changed: the row as it was
    updateActionBar();
    fail(err, row.resource);
    offerAlternatives(err, null);
    return null;
  }
}

async function change(res, path, verb) {
  const row = rowOf(res.resource_id);
  problem(null);
  try {
    await state.api.post(`/v1/reservations/${res.id}/${path}`, undefined, ifMatch(res));
  } catch (err) {
    if (err.problem && String(err.problem.type).endsWith("precondition-failed")) refreshSoon(res.resource_id);
    throw err;
  }
  notice(`${verb}: ${describeRange(row.resource, res.startMs, res.endMs)}.`);
  if (state.hold && state.hold.id === res.id) state.hold = null; // confirmed or let go
  updateActionBar();
  await loadRow(res.resource_id);
}

async function move(res, start, end, { quiet = false } = {}) {
  const row = rowOf(res.resource_id);
  problem(null);
  try {
    await state.api.patch(`/v1/reservations/${res.id}`, { start: iso(start), end: iso(end) }, ifMatch(res));
  } catch (err) {
    renderRow(row, renderOptions()); // back where it was: nothing changed
    if (err.problem && String(err.problem.type).endsWith("precondition-failed")) refreshSoon(res.resource_id);
    if (quiet) throw err;
    fail(err, row.resource);
    offerAlternatives(err, res);
    return false;
  }
  notice(`Moved to ${describeRange(row.resource, start, end)}.`);
  await loadRow(res.resource_id);
  return true;
}

// A hold's new expiry, HOLD_SECONDS from now (POST /v1/reservations/{id}/extend).
async function extend(res) {
  const row = rowOf(res.resource_id);
  problem(null);
  const { data } = await state.api.post(
    `/v1/reservations/${res.id}/extend`, { hold_seconds: HOLD_SECONDS }, ifMatch(res),
  );
  const held = reservationOf(data);
  if (state.hold && state.hold.id === held.id) state.hold = held;
  notice(`Hold extended: ${describeRange(row.resource, held.startMs, held.endMs)}, until ${formatTime(row.resource.timezone, Date.parse(held.expires_at))}.`);
  updateActionBar();
  await loadRow(res.resource_id);
}

// ---- the controller the modules call --------------------------------------------------------

const ctl = {
  api: () => state.api,
  date: () => state.date,
  canWrite: () => true,
  row: rowOf,
  rows: () => [...state.rows.values()],
  selection: () => state.selection,
  preview: (sel) => drawSelection(rowOf(sel.resourceId), sel),
  select,
  redraw: (row) => renderRow(row, renderOptions()),
  hold: (sel) => createReservation(sel.resourceId, sel.start, sel.end),
  move,
  open: (res) => dialog.open(res, rowOf(res.resource_id)),
  confirm: (res) => change(res, "confirm", "Confirmed"),
  checkIn: (res) => change(res, "check-in", "Checked in"),
  approve: (res) => change(res, "approve", "Approved"),
  decline: (res) => change(res, "decline", "Declined"),
  cancel: (res) => change(res, "cancel", "Cancelled"),
  extend,
  bookingElement: (id) => document.querySelector(`.booking[data-id="${id}"]`),
  async jumpTo(resourceId, start, end) {
    const resource = state.resources.find((r) => r.id === resourceId);
    if (!resource) return;
    const date = localDate(resource.timezone, start);
    if (date !== state.date) {
      state.date = date;
      state.selection = null;
      await loadDay();
    }
    select({ resourceId, start, end, suggested: true });
    const row = rowOf(resourceId);
    row.el.scrollIntoView({ block: "nearest" });
    row.track.focus({ preventScroll: true });
    row.track.closest(".timeline").scrollLeft = Math.max(0, x(row, start) - 80);
  },
};
const dialog = new BookingDialog(ctl);

// ---- live updates ----------------------------------------------------------------------------

function liveState(text) {
  $("live-state").textContent = text;
}

function onEvent(event) {
  if (String(event.type).startsWith("resource.")) {
    loadResources().then(loadDay).catch((err) => fail(err));
    return;
  }
  if (event.resource_id && state.rows.has(event.resource_id)) refreshSoon(event.resource_id);
}

function startLive() {
  state.stream = new EventStream(state.api.key, {
    onEvent,
    onState: (s) => {
      if (s === "live") liveState("Live: changes appear as they happen.");
      else if (s === "reconnecting") liveState("Reconnecting to live updates…");
      else if (s === "forbidden") {
        liveState("Live updates need an admin or viewer key; refreshing every 15 s.");
        state.poller = setInterval(() => loadDay().catch(() => {}), 15000);
      } else signOut("The key was refused; sign in again.");
    },
  }).start();
}

// ---- forms ------------------------------------------------------------------------------------

function chosenResource() {
  const value = $("new-resource").value;
  const pool = poolOf(value, state.resources);
  return pool ? pool.resources[0] : state.resources.find((r) => r.id === value);
}

function updateZoneHint() {
  const r = chosenResource();
  $("new-zone").textContent = r ? `(${r.timezone})` : "";
}

async function submitNew(event) {
  event.preventDefault();
  const resource = chosenResource();
  const pool = poolOf($("new-resource").value, state.resources);
  const a = parseClock($("new-start").value);
  let b = parseClock($("new-end").value);
  if (!resource || a === null || b === null) {
    problem("Choose a resource and type a start and an end time.");
    return;
  }
  if (b === 0 && a > 0) b = 24 * 60;
  if (b <= a) {
    problem("The end must be after the start.");
    return;
  }
  const start = wallToInstant(resource.timezone, state.date, a);
  const end = wallToInstant(resource.timezone, state.date, b);
  const res = await createReservation(resource.id, start, end, {
    pool: pool ? { tags: [pool.tag] } : undefined,
    confirmNow: $("new-confirm").checked,
    customer: $("new-customer").value.trim() || undefined,
  });
  if (res) $("new-customer").value = "";
}

// ---- sign-in ----------------------------------------------------------------------------------

function showSignedIn(signedIn) {
  $("sign-in").hidden = signedIn;
  $("workspace").hidden = !signedIn;
  $("who").hidden = !signedIn;
}

// ---- a confirm link (docs/agents.md): /app?confirm=<token>, a hold an agent made -----------

const LINK_TOKEN = new URLSearchParams(location.search).get("confirm");
const LINK_ID = /^([0-9a-f-]{36})\./.exec(LINK_TOKEN || "")?.[1];

function offerLinkConfirm() {
  if (!LINK_ID) return;
  $("link-text").textContent = `An assistant holds reservation ${LINK_ID} for you; confirm it with your key.`;
  $("link-bar").hidden = false;
}

async function confirmByLink() {
  problem(null);
  try {
    const { data } = await state.api.request("POST", `/v1/reservations/${LINK_ID}/confirm`, {
      params: { confirm_token: LINK_TOKEN },
    });
    $("link-bar").hidden = true;
    notice(`Confirmed reservation ${data.id}.`);
    if (state.rows.has(data.resource_id)) await loadRow(data.resource_id);
  } catch (err) {
    fail(err);
  }
}

async function signIn(key) {
  const api = new Api(key, { onUnauthorized: () => signOut("The key was refused; sign in again.") });
  await api.get("/v1/resources", { limit: "1" }); // throws on a bad key
  storeKey(key);
  state.api = api;
  const prefix = key.split("_").slice(0, 2).join("_");
  $("who-text").textContent = `Key ${prefix}…`;
  showSignedIn(true);
  await loadResources();
  await loadDay();
  startLive();
  state.clockTimer = setInterval(moveNowLines, 30000);
  offerLinkConfirm();
}

function signOut(message) {
  if (state.stream) state.stream.stop();
  clearInterval(state.poller);
  clearInterval(state.clockTimer);
  forgetKey();
  Object.assign(state, { api: null, stream: null, resources: [], rows: new Map(), selection: null, hold: null });
  $("timeline").replaceChildren();
  $("find-results").replaceChildren();
  $("api-key").value = "";
  $("sign-in-error").textContent = message || "";
  problem(null);
  showSignedIn(false);
  $("api-key").focus();
}

function moveNowLines() {
  for (const row of state.rows.values()) renderRow(row, renderOptions());
  if (state.selection) select(state.selection);
  updateActionBar(); // a lapsed hold loses its Extend button
}

function setDate(date) {
  if (!date || date === state.date) return;
  state.date = date;
  state.selection = null;
  updateActionBar();
  problem(null);
  loadDay().catch((err) => fail(err));
}

function wire() {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    $("sign-in-error").textContent = "";
    try {
      await signIn(key);
    } catch (err) {
      forgetKey();
      showSignedIn(false);
      $("sign-in-error").textContent = err instanceof ApiError ? explain(err) : String(err);
    }
  });
  $("sign-out").addEventListener("click", () => signOut("Signed out."));
  $("day").addEventListener("change", (e) => setDate(e.target.value));
  $("prev-day").addEventListener("click", () => setDate(addDays(state.date, -1)));
  $("next-day").addEventListener("click", () => setDate(addDays(state.date, 1)));
  $("today").addEventListener("click", () => setDate(localDate(BROWSER_ZONE, Date.now())));
  $("new-resource").addEventListener("change", updateZoneHint);
  $("new-form").addEventListener("submit", (e) => submitNew(e).catch((err) => fail(err)));
  $("action-hold").addEventListener("click", () => {
    const sel = state.selection;
    if (sel) createReservation(sel.resourceId, sel.start, sel.end);
  });
  $("action-confirm").addEventListener("click", () => {
    if (state.hold) change(state.hold, "confirm", "Confirmed").catch((err) => fail(err, rowOf(state.hold.resource_id).resource));
  });
  $("link-confirm").addEventListener("click", () => confirmByLink());
  $("action-extend").addEventListener("click", () => {
    if (state.hold) extend(state.hold).catch((err) => fail(err, rowOf(state.hold.resource_id).resource));
  });
  $("action-release").addEventListener("click", () => {
    if (state.hold) change(state.hold, "cancel", "Released").catch((err) => fail(err));
  });
  $("action-dismiss").addEventListener("click", () => {
    state.hold = null;
    select(null);
  });
  attach($("timeline"), ctl);
  attachFinder(ctl);
}

wire();
const saved = storedKey();
if (saved) {
  signIn(saved).catch(() => signOut("Your session ended; sign in again."));
} else {
  showSignedIn(false);
}
