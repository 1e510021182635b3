import { api } from "/app/assets/api.js";
import { el, date, showError } from "/app/assets/ui.js";

// The Scopes & Secrets page: the org's secrets, its scopes (create, edit,
// delete), and on a scope's own page that scope's secrets and agents. A
// secret's value goes to the API once and is never shown again: the API
// answers with keys and dates only.

const plural = (n, one) => `${n} ${one}${n === 1 ? "" : "s"}`;
const none = () => el("span", { class: "muted" }, "none");
const emptyRow = (cols, text) => el("tr", {}, el("td", { colspan: String(cols) }, text));
const head = (...cols) => el("thead", {}, el("tr", {}, ...cols.map((h) => el("th", { scope: "col" }, h || el("span", { class: "visually-hidden" }, "Actions")))));

// secretsSection lists the secrets at base (the org's or a scope's), sets
// and deletes them; prefix names its elements' ids (prefix-secrets-table,
// prefix-secret-form, prefix-secret-key, prefix-secret-value). It returns
// the section and its refresh, once the list is loaded.
async function secretsSection(base, prefix, title, intro) {
  const headingId = prefix + "-secrets-h";
  // The heading takes the focus after a delete, which removes the button
  // that had it: the keyboard goes on from the section, not the page's top.
  const heading = el("h2", { id: headingId, tabindex: "-1" }, title);
  const tbody = el("tbody");
  const note = el("p", { role: "status", id: prefix + "-secret-note" });
  const refresh = async () => {
    const { secrets } = await api("GET", base);
    tbody.replaceChildren(...(secrets.length === 0 ? [emptyRow(4, "No secrets yet.")] : secrets.map((s) => el("tr", { "data-secret": s.key },
      el("td", { "data-label": "Key" }, el("code", {}, s.key)),
      el("td", { "data-label": "Created" }, date(s.createdAt)),
      el("td", { "data-label": "Updated" }, date(s.updatedAt)),
      el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Delete secret ${s.key}`, onclick: async () => {
        if (!confirm(`Delete the secret ${s.key}? Agents already running keep it; agents started from now on do not get it.`)) return;
        try {
          await api("DELETE", `${base}/${encodeURIComponent(s.key)}`);
          note.textContent = `Deleted ${s.key}.`;
          await refresh();
          heading.focus();
        } catch (e) { showError(e); }
      } }, "Delete"))))));
  };
  const keyId = prefix + "-secret-key", valueId = prefix + "-secret-value";
  const key = el("input", { id: keyId, name: "key", required: "", maxlength: "256", pattern: "[A-Z0-9_]+", title: "Uppercase letters, digits and underscores", autocomplete: "off",
    autocapitalize: "characters", spellcheck: "false", "aria-describedby": keyId + "-hint" });
  // A password field: the value is not on screen while typed, and the form
  // clears it once saved.
  const value = el("input", { id: valueId, name: "value", type: "password", required: "", autocomplete: "off", "aria-describedby": valueId + "-hint" });
  const form = el("form", { id: prefix + "-secret-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("PUT", base, { key: key.value, value: value.value });
      form.reset();
      note.textContent = `${r.created ? "Added" : "Replaced the value of"} ${r.key}. The value is stored encrypted and will not be shown again.`;
      await refresh();
    } catch (e) { showError(e); }
  } },
  el("label", { for: keyId }, "Key"), key,
  el("p", { class: "hint", id: keyId + "-hint" }, "Uppercase letters, digits and underscores, e.g. MY_API_KEY: the environment variable's name. Saving a key that exists replaces its value."),
  el("label", { for: valueId }, "Value"), value,
  el("p", { class: "hint", id: valueId + "-hint" }, "Stored encrypted; it will not be shown again, here or by the API."),
  el("button", { type: "submit" }, "Save secret"), note);
  await refresh();
  const section = el("section", { id: prefix + "-secrets", "aria-labelledby": headingId },
    heading, el("p", {}, intro),
    el("table", { id: prefix + "-secrets-table", "aria-labelledby": headingId }, head("Key", "Created", "Updated", ""), tbody),
    el("h3", {}, "Set a secret"), form);
  return { section, refresh };
}

// scopesView is the org's secrets and its scopes: create, edit in place
// (name and description), delete.
export async function scopesView() {
  const org = await secretsSection("/api/v1/secrets", "org", "Organization secrets",
    "Given to every agent that is in no scope, as environment variables when its container starts.");
  const tbody = el("tbody");
  const heading = el("h2", { id: "scopes-h", tabindex: "-1" }, "Scopes");
  const note = el("p", { role: "status", id: "scope-note" });
  const refresh = async () => {
    const { scopes } = await api("GET", "/api/v1/scopes");
    tbody.replaceChildren(...(scopes.length === 0 ? [emptyRow(6, "No scopes yet.")] : scopes.map(row)));
  };
  const focusEdit = (id) => tbody.querySelector(`tr[data-scope="${CSS.escape(id)}"] button.edit`)?.focus();
  const row = (s) => {
    const tr = el("tr", { "data-scope": s.id });
    const show = () => tr.replaceChildren(
      el("td", { "data-label": "Name" }, el("a", { href: "/app/scopes/" + encodeURIComponent(s.id) }, s.name)),
      el("td", { "data-label": "Description" }, s.description || none()),
      el("td", { "data-label": "Agents" }, String(s.agentCount ?? 0)),
      el("td", { "data-label": "Secrets" }, String(s.secretCount ?? 0)),
      el("td", { "data-label": "Created" }, date(s.createdAt)),
      el("td", {}, el("div", { class: "actions" },
        el("button", { type: "button", class: "secondary edit", "aria-label": `Edit scope ${s.name}`, onclick: edit }, "Edit"),
        el("button", { type: "button", class: "danger", "aria-label": `Delete scope ${s.name}`, onclick: remove }, "Delete"))));
    // edit turns the row into a form (no prompt): the name and the
    // description, saved with PATCH; Cancel or Escape puts the row back.
    const edit = () => {
      const nameId = "edit-scope-name-" + s.id, descId = "edit-scope-description-" + s.id;
      const name = el("input", { id: nameId, name: "name", required: "", maxlength: "100", autocomplete: "off", value: s.name });
      const desc = el("textarea", { id: descId, name: "description", rows: "2", maxlength: "1000" });
      desc.value = s.description || "";
      const cancel = () => { show(); focusEdit(s.id); };
      const form = el("form", { class: "edit-scope", "aria-label": `Edit scope ${s.name}`,
        onkeydown: (ev) => { if (ev.key === "Escape") cancel(); },
        onsubmit: async (ev) => {
          ev.preventDefault();
          const body = {};
          if (name.value !== s.name) body.name = name.value;
          if (desc.value !== (s.description || "")) body.description = desc.value;
          if (Object.keys(body).length === 0) return cancel();
          try {
            await api("PATCH", "/api/v1/scopes/" + encodeURIComponent(s.id), body);
            note.textContent = body.name ? `Renamed ${s.name} to ${body.name}.` : `Saved ${s.name}.`;
            await refresh();
            focusEdit(s.id);
          } catch (e) { showError(e); }
        } },
      el("label", { for: nameId }, "Name"), name,
      el("label", { for: descId }, "Description ", el("span", { class: "hint" }, "(optional)")), desc,
      el("div", { class: "actions" }, el("button", { type: "submit" }, "Save"),
        el("button", { type: "button", class: "secondary", onclick: cancel }, "Cancel")));
      tr.replaceChildren(el("td", { colspan: "6" }, form));
      name.focus();
    };
    const remove = async () => {
      // The API's behaviour: the scope's agents and secrets become
      // org-level; an org secret of the same key wins over the scope's.
      if (!confirm(`Delete the scope "${s.name}"?\n\nIts ${plural(s.agentCount ?? 0, "agent")} and ${plural(s.secretCount ?? 0, "secret")} become org-level: ` +
        "the agents get the organization's secrets from their next start, and the scope's secrets go to every agent in no scope " +
        "(where the organization already has a secret of the same key, the organization's is kept and the scope's dropped). Running containers are not affected.")) return;
      try {
        await api("DELETE", "/api/v1/scopes/" + encodeURIComponent(s.id));
        note.textContent = `Deleted the scope ${s.name}.`;
        await Promise.all([refresh(), org.refresh()]);
        heading.focus();
      } catch (e) { showError(e); }
    };
    show();
    return tr;
  };
  const name = el("input", { id: "scope-name", name: "name", required: "", maxlength: "100", autocomplete: "off" });
  const description = el("textarea", { id: "scope-description", name: "description", rows: "2", maxlength: "1000" });
  const create = el("form", { id: "create-scope", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { name: name.value };
    if (description.value) body.description = description.value;
    try {
      const s = await api("POST", "/api/v1/scopes", body);
      create.reset();
      note.textContent = `Created the scope ${s.name}.`;
      await refresh();
    } catch (e) { showError(e); }
  } },
  el("label", { for: "scope-name" }, "Name"), name,
  el("label", { for: "scope-description" }, "Description ", el("span", { class: "hint" }, "(optional)")), description,
  el("button", { type: "submit" }, "Create scope"), note);
  await refresh();
  return [el("h1", {}, "Scopes & Secrets"),
    el("p", {}, "Secrets are environment variables given to agents when their containers start, stored encrypted; their values are never shown again. " +
      "An agent in a scope gets that scope's secrets only; an agent in no scope gets the organization's."),
    org.section,
    el("section", { id: "scopes", "aria-labelledby": "scopes-h" },
      heading,
      el("table", { id: "scopes-table", "aria-labelledby": "scopes-h" }, head("Name", "Description", "Agents", "Secrets", "Created", ""), tbody),
      el("h3", {}, "New scope"), create)];
}

// scopeView is one scope: its secrets (set, delete) and its agents.
export async function scopeView(id) {
  if (!id) return scopesView();
  const path = "/api/v1/scopes/" + encodeURIComponent(id);
  const s = await api("GET", path);
  const secrets = await secretsSection(path + "/secrets", "scope", "Secrets",
    `Given only to the agents in ${s.name}, as environment variables when their containers start.`);
  const agents = s.agents.length === 0 ? [el("p", {}, "No agents are in this scope. Choose it when you create an agent.")] : [
    el("table", { id: "scope-agents-table", "aria-labelledby": "scope-agents-h" }, head("Name", "Status", "Created"),
      el("tbody", {}, ...s.agents.map((a) => el("tr", {},
        el("td", { "data-label": "Name" }, el("a", { href: "/app/agents/" + encodeURIComponent(a.id) }, a.name)),
        el("td", { "data-label": "Status" }, el("span", { class: "status status-" + a.status.toLowerCase() }, a.status)),
        el("td", { "data-label": "Created" }, date(a.createdAt))))))];
  return [el("p", {}, el("a", { href: "/app/scopes" }, el("span", { "aria-hidden": "true" }, "← "), "All scopes and secrets")),
    el("h1", {}, s.name),
    el("p", {}, s.description || el("span", { class: "muted" }, "No description.")),
    secrets.section,
    el("section", { "aria-labelledby": "scope-agents-h" }, el("h2", { id: "scope-agents-h" }, "Agents in this scope"), ...agents)];
}
