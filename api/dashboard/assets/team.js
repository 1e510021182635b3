import { api } from "/app/assets/api.js";
import { el, date, showError } from "/app/assets/ui.js";

// teamView invites people into the org: a single-use sign-up link, shown
// once, optionally for one email address; open invitations are listed
// (never their codes) and can be withdrawn.
export async function teamView(current) {
  const tbody = el("tbody");
  const refresh = async () => {
    const { invitations } = await api("GET", "/api/v1/invitations");
    tbody.replaceChildren(...invitations.map((i) => el("tr", { "data-invitation": i.id },
      el("td", { "data-label": "Email" }, i.email || "anyone"),
      el("td", { "data-label": "Created" }, date(i.createdAt)),
      el("td", { "data-label": "Expires" }, date(i.expiresAt)),
      el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Withdraw the invitation for ${i.email || "anyone"}`, onclick: async () => {
        try { await api("DELETE", "/api/v1/invitations/" + i.id); await refresh(); } catch (e) { showError(e); }
      } }, "Withdraw")))));
  };
  const email = el("input", { id: "team-email", type: "email", autocomplete: "off" });
  const created = el("div");
  const form = el("form", { id: "team-invite", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const inv = await api("POST", "/api/v1/invitations", email.value ? { email: email.value } : {});
      const copy = el("button", { type: "button", class: "secondary", onclick: async () => {
        await navigator.clipboard.writeText(inv.signupUrl);
        copy.textContent = "Copied";
      } }, "Copy link");
      created.replaceChildren(el("p", {}, "Send this sign-up link now: it is shown only once and admits one person into " + current.org.name + "."),
        el("p", { class: "secret", id: "new-invitation" }, inv.signupUrl), copy);
      form.reset();
      await refresh();
    } catch (e) { showError(e); }
  } }, el("label", { for: "team-email" }, "Email ", el("span", { class: "hint" }, "(optional: admit only this address)")), email,
  el("button", { type: "submit" }, "Invite"));
  await refresh();
  return [el("h1", {}, "Team"), el("p", {}, `People you invite sign up into ${current.org.name} and see its agents, tokens, scopes and secrets.`),
    form, created, el("h2", { id: "team-invitations-h" }, "Open invitations"),
    el("table", { "aria-labelledby": "team-invitations-h" }, el("thead", {}, el("tr", {}, ...["Email", "Created", "Expires", ""].map((h) => el("th", { scope: "col" }, h)))), tbody)];
}
