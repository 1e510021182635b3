import { api } from "/app/assets/api.js";
import { el, date, showError } from "/app/assets/ui.js";

// tokensView lists the org's tokens, creates one (shown once, with a copy
// button) and revokes them.
export async function tokensView() {
  const table = el("div");
  const refresh = async () => {
    const { tokens } = await api("GET", "/api/v1/tokens");
    const rows = tokens.map((t) => el("tr", {},
      el("td", { "data-label": "Label" }, t.label),
      el("td", { "data-label": "Token" }, "…" + t.last4),
      el("td", { "data-label": "Created" }, date(t.createdAt)),
      el("td", { "data-label": "Last used" }, date(t.lastUsedAt)),
      el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Revoke ${t.label}`, onclick: async () => {
        if (!confirm(`Revoke the token "${t.label}"? Requests with it will be refused.`)) return;
        try { await api("DELETE", "/api/v1/tokens/" + t.id); await refresh(); } catch (e) { showError(e); }
      } }, "Revoke"))));
    table.replaceChildren(el("table", { "aria-label": "API tokens" },
      el("thead", {}, el("tr", {}, ...["Label", "Token", "Created", "Last used"].map((h) => el("th", { scope: "col" }, h)),
        el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")))),
      el("tbody", {}, ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "5" }, "No tokens yet."))]))));
  };
  const label = el("input", { id: "label", name: "label", required: "", maxlength: "100" });
  const created = el("div");
  const form = el("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const t = await api("POST", "/api/v1/tokens", { label: label.value });
      const copy = el("button", { type: "button", class: "secondary", onclick: async () => {
        await navigator.clipboard.writeText(t.token);
        copy.textContent = "Copied";
      } }, "Copy");
      created.replaceChildren(el("p", {}, "Copy the token now: it is shown only once."), el("p", { class: "secret", id: "new-token" }, t.token), copy);
      label.value = "";
      await refresh();
    } catch (e) { showError(e); }
  } }, el("label", { for: "label" }, "Label"), label, el("button", { type: "submit" }, "Create token"));
  await refresh();
  return [el("h1", {}, "API Tokens"), form, created, table];
}
