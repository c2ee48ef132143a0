// Find a free slot: POST /v1/availability/search, then jump to a fit on the timeline.
import { explain } from "./problems.js";
import { dayStart, formatDay, formatTime, localDate, MINUTE } from "./zones.js";

const $ = (id) => document.getElementById(id);
const WEEK = 7 * 24 * 60 * MINUTE;

export function attachFinder(ctl) {
  $("find-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const state = $("find-state");
    const list = $("find-results");
    const minutes = Number($("find-duration").value);
    const tags = $("find-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
    const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    const from = Math.max(Date.now() + MINUTE, dayStart(browserZone, ctl.date()));
    const body = {
      from: new Date(from).toISOString(),
      to: new Date(from + WEEK).toISOString(),
      duration: `PT${minutes}M`,
      tags,
      min_capacity: Number($("find-capacity").value) || 1,
      limit: 10,
    };
    state.textContent = "Searching…";
    list.replaceChildren();
    try {
      const { data } = await ctl.api().post("/v1/availability/search", body);
      state.textContent = data.items.length
        ? `${data.items.length} earliest fit${data.items.length > 1 ? "s" : ""} in the next 7 days:`
        : "Nothing fits in the next 7 days.";
      for (const hit of data.items) list.append(result(ctl, hit));
    } catch (err) {
      state.textContent = explain(err);
    }
  });
}

function result(ctl, hit) {
  const zone = hit.resource.timezone;
  const start = Date.parse(hit.earliest.start);
  const end = Date.parse(hit.earliest.end);
  const li = document.createElement("li");
  const text = document.createElement("span");
  text.textContent = `${hit.resource.name}: ${formatDay(localDate(zone, start))} ${formatTime(zone, start)}–${formatTime(zone, end)} (${zone})`;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "jump";
  button.textContent = "Show";
  button.setAttribute("aria-label", `Show ${text.textContent} on the timeline`);
  button.addEventListener("click", () => ctl.jumpTo(hit.resource.id, start, end));
  li.append(text, button);
  return li;
}
