// A refusal's `alternatives` (docs/api.md, "Alternatives") as buttons a person picks to book
// (or, for a refused move, to move there) instead of going back to pick another time.
import { formatDay, formatTime, localDate } from "./zones.js";

const $ = (id) => document.getElementById(id);

export function clearAlternatives() {
  $("alternatives").hidden = true;
  $("alternatives-list").replaceChildren();
}

// Show the alternatives a problem carries; `pick(resourceId, startMs, endMs)` books one.
// A move offers only the same resource's times (a reservation cannot change resource).
// Returns whether any were shown.
export function showAlternatives(problem, { zoneOf, pick, moving = false }) {
  clearAlternatives();
  const found = problem && problem.alternatives;
  if (!found) return false;
  const offers = [...found.same_resources, ...(moving ? [] : found.other_resources)]
    .filter((a) => a.resources.length === 1);
  if (!offers.length) return false;
  const list = $("alternatives-list");
  for (const offer of offers) {
    const [choice] = offer.resources;
    const zone = zoneOf(choice.resource_id) || "UTC";
    const start = Date.parse(offer.start);
    const end = Date.parse(offer.end);
    const when = `${formatDay(localDate(zone, start))} ${formatTime(zone, start)}–${formatTime(zone, end)}`;
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "offer";
    button.dataset.resourceId = choice.resource_id;
    button.dataset.start = offer.start;
    button.textContent = `${moving ? "Move to" : "Book"} ${choice.name}, ${when} (${zone})`;
    button.addEventListener("click", () => {
      clearAlternatives();
      pick(choice.resource_id, start, end);
    });
    li.append(button);
    list.append(li);
  }
  $("alternatives-title").textContent = moving ? "Free times to move to" : "Free instead";
  $("alternatives").hidden = false;
  return true;
}
