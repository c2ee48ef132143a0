// The booking dialog: facts, confirm / approve / decline / cancel, and a move by typed times.
import { explain } from "./problems.js";
import { flagText } from "./timeline.js";
import { formatDay, formatTime, localDate, parseClock, wallToInstant } from "./zones.js";

const $ = (id) => document.getElementById(id);
const STATUS = { held: "Held", pending: "Pending approval", confirmed: "Confirmed", no_show: "No-show (released)" };

export class BookingDialog {
  constructor(ctl) {
    this.ctl = ctl;
    this.el = $("booking-dialog");
    this.current = null;
    const act = (id, fn) => $(id).addEventListener("click", () => this.run(fn));
    act("dialog-confirm", (res) => ctl.confirm(res));
    act("dialog-extend", (res) => ctl.extend(res));
    act("dialog-check-in", (res) => ctl.checkIn(res));
    act("dialog-approve", (res) => ctl.approve(res));
    act("dialog-decline", (res) => ctl.decline(res));
    act("dialog-cancel", (res) => ctl.cancel(res));
    act("dialog-save", (res) => this.moveTyped(res));
    this.el.addEventListener("close", () => {
      const back = this.current && this.ctl.bookingElement(this.current.res.id);
      this.current = null;
      if (back) back.focus();
    });
  }

  open(res, row) {
    this.current = { res, row };
    const zone = row.resource.timezone;
    const date = localDate(zone, res.startMs);
    $("dialog-title").textContent = `${row.resource.name}: ${STATUS[res.status] || res.status}`;
    const facts = [
      ["When", `${formatDay(date)}, ${formatTime(zone, res.startMs)}–${formatTime(zone, res.endMs)} (${zone})`],
      ["Status", STATUS[res.status] || res.status],
    ];
    if (res.checked_in_at) facts.push(["Checked in", formatTime(zone, Date.parse(res.checked_in_at))]);
    if (res.customer) facts.push(["Customer", res.customer]);
    if (res.quantity > 1) facts.push(["Units", String(res.quantity)]);
    if (res.flagged) facts.push(["Flagged", flagText(res)]);
    if (res.expires_at) {
      const word = res.status === "pending" ? "Approve by" : "Expires";
      facts.push([word, `${formatTime(zone, Date.parse(res.expires_at))} (${formatDay(localDate(zone, Date.parse(res.expires_at)))})`]);
    }
    const dl = $("dialog-facts");
    dl.replaceChildren();
    for (const [k, v] of facts) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dl.append(dt, dd);
    }
    $("dialog-zone").textContent = `(${zone})`;
    $("dialog-start").value = formatTime(zone, res.startMs);
    $("dialog-end").value = formatTime(zone, res.endMs);
    $("dialog-confirm").hidden = res.status !== "held";
    $("dialog-extend").hidden = res.status !== "held" || Date.parse(res.expires_at) <= Date.now();
    $("dialog-check-in").hidden = res.status !== "confirmed" || Boolean(res.checked_in_at);
    const live = ["held", "pending", "confirmed"].includes(res.status);
    $("dialog-cancel").hidden = !live;
    $("dialog-move").hidden = !live;
    $("dialog-approve").hidden = res.status !== "pending";
    $("dialog-decline").hidden = res.status !== "pending";
    this.problem(null);
    if (!this.el.open) this.el.showModal();
  }

  problem(text) {
    const p = $("dialog-problem");
    p.textContent = text || "";
    p.hidden = !text;
  }

  async moveTyped(res) {
    const { row } = this.current;
    const zone = row.resource.timezone;
    const date = localDate(zone, res.startMs);
    const a = parseClock($("dialog-start").value);
    let b = parseClock($("dialog-end").value);
    if (a === null || b === null) throw new Error("Type a start and an end time.");
    if (b <= a && b === 0) b = 24 * 60;
    if (b <= a) throw new Error("The end must be after the start.");
    return this.ctl.move(res, wallToInstant(zone, date, a), wallToInstant(zone, date, b), { quiet: true });
  }

  async run(fn) {
    if (!this.current) return;
    const { res, row } = this.current;
    try {
      await fn(res);
      this.el.close();
    } catch (err) {
      this.problem(err.problem ? explain(err, row.resource) : err.message);
    }
  }
}
