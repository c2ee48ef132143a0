// problem+json (RFC 9457) in plain words: the `type` slug, and for rule violations the
// `reason`, become one sentence a person can act on.
import { formatTime } from "./zones.js";

const RULES = {
  "outside-opening-hours": (r) => `${r} is closed at that time (outside its opening hours).`,
  "in-blackout": (r) => `${r} is blacked out at that time.`,
  "off-grid": (r) => `Bookings of ${r} must start on its time grid.`,
  "too-short": (r) => `That is shorter than the shortest booking ${r} allows.`,
  "too-long": (r) => `That is longer than the longest booking ${r} allows.`,
  "too-soon": (r) => `That is too soon: ${r} must be booked further ahead.`,
  "in-the-past": () => "That time has passed: choose a start from now on.",
  "too-far-ahead": (r) => `That is too far ahead: ${r} cannot be booked that early.`,
  "booker-limit": (r) => `You already have as many bookings of ${r} as allowed.`,
  "in-history": () => "That time is too far in the past to book or change.",
};

function slug(problem) {
  return String(problem.type || "").split("/").pop();
}

function conflictText(problem, resource) {
  const zone = resource ? resource.timezone : "UTC";
  const ranges = (problem.conflicts || [])
    .slice(0, 3)
    .map((c) => {
      const what = c.status === "held" ? "a hold" : c.status === "pending" ? "a pending booking" : "a booking";
      return `${what} ${formatTime(zone, Date.parse(c.start))}–${formatTime(zone, Date.parse(c.end))}`;
    });
  const name = resource ? resource.name : "The resource";
  if (problem.capacity > 1 || /units are taken/.test(problem.detail || "")) {
    return `${name} is fully booked for part of that time${ranges.length ? ` (${ranges.join(", ")})` : ""}.`;
  }
  return ranges.length
    ? `That time overlaps ${ranges.join(", ")} on ${name} (turnover buffers included).`
    : `That time overlaps another booking on ${name}.`;
}

// One sentence for a failed request. `resource` names the row it was about, if any.
export function explain(error, resource) {
  const problem = error.problem || {};
  const name = resource ? resource.name : "The resource";
  switch (slug(problem)) {
    case "reservation-conflict":
      return conflictText(problem, resource);
    case "booking-rule-violated": {
      const rule = RULES[problem.reason];
      const extra = (problem.violations || []).map((v) => v.detail).filter(Boolean)[0];
      return rule ? `${rule(name)}${extra ? ` ${extra}` : ""}` : problem.detail || problem.title;
    }
    case "hold-expired":
      return "The hold has expired; select the time again.";
    case "reservation-not-live":
      return "This booking was already cancelled or has expired.";
    case "approval-required":
      return "This booking needs an admin's approval; it stays pending until then.";
    case "reservation-not-pending":
      return "This booking is no longer waiting for approval.";
    case "reservation-in-history":
      return "This booking is in the history and can no longer be changed.";
    case "precondition-failed":
      return "Someone changed this booking meanwhile; the timeline now shows the latest version. Try again.";
    case "hold-limit-reached":
      return "Too many holds are open at once; confirm or release some first.";
    case "rate-limited":
      return "Too many requests just now; wait a moment and try again.";
    case "forbidden":
      return "Your key's role does not allow this (viewer keys are read-only).";
    case "unauthenticated":
      return "The key was refused (revoked, expired or mistyped); sign in again.";
    case "not-found":
      return "That no longer exists, or your key cannot see it.";
    case "invalid-input": {
      const first = (problem.errors || [])[0];
      return first ? `Invalid ${first.field}: ${first.message}.` : problem.detail || "The request is not valid.";
    }
    case "service-unavailable":
      return "The service is busy; try again in a moment.";
    case "network":
      return "The server cannot be reached; check the connection and try again.";
    default:
      return problem.detail || problem.title || `The request failed (HTTP ${error.status}).`;
  }
}
