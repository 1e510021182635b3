// Helpers every view uses: element building, dates, money, errors and the
// timers of pages that poll.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

export function date(s) { return s ? new Date(s).toLocaleString() : "never"; }

// showError says e at the top of the page, in place of the error before
// (a role="alert" is read out as it appears), and scrolls it into sight.
export function showError(e) {
  const view = document.getElementById("view");
  view.querySelectorAll(":scope > .error").forEach((p) => p.remove());
  const p = el("p", { class: "error", role: "alert" }, e.message);
  view.prepend(p);
  p.scrollIntoView({ block: "nearest" });
}

// Pages that poll register their timer here; leaving the page clears it.
let timers = [];
export function every(ms, fn) { timers.push(setInterval(fn, ms)); }
export function clearTimers() { timers.forEach(clearInterval); timers = []; }

export function money(n) { return "$" + (n || 0).toFixed(4); }

// statusCell says the status in words, with a colour as a second cue.
export function statusCell(a) {
  const busy = a.status === "RUNNING" ? (a.busy ? " · busy" : " · idle") : "";
  return el("span", { class: "status status-" + a.status.toLowerCase() }, a.status + busy);
}
