import { api } from "/app/assets/api.js";
import { el, date, showError, every } from "/app/assets/ui.js";

// The operator's pages, shown to operator accounts: the nodes with their
// capacity and allocation (drain, undrain), the orgs with their plan's caps
// and current use, and who may sign up (mode, invitations, accounts). They
// call the operator API with the session cookie.

// bar is a labelled <meter> with the figures in words beside it, so the
// bar is never the only cue. max 0 is "no limit".
function bar(label, used, max, unit = "") {
  const words = max > 0 ? `${used}${unit} of ${max}${unit}` : `${used}${unit} (no limit)`;
  const attrs = { min: "0", value: String(used), "aria-label": `${label}: ${words}` };
  if (max > 0) {
    attrs.max = String(max);
    attrs.high = String(max * 0.9);
    attrs.optimum = "0";
  } else {
    attrs.max = String(Math.max(used, 1));
  }
  return el("span", { class: "bar" }, el("meter", attrs), el("span", {}, words));
}

function cores(millis) { return Math.round(millis / 100) / 10; }

// nodesSection is the host pool, refreshed every 5 s.
function nodesSection() {
  const tbody = el("tbody");
  const refresh = async () => {
    const { nodes } = await api("GET", "/api/v1/nodes");
    tbody.replaceChildren(...nodes.map((n) => {
      const draining = n.status === "draining" || n.drain;
      const action = el("button", { type: "button", class: draining ? "secondary" : "danger", "data-node-action": draining ? "undrain" : "drain",
        "aria-label": `${draining ? "Undrain" : "Drain"} ${n.name}`, onclick: async () => {
          if (!draining && !confirm(`Drain ${n.name}? No new agents are placed on it; its agents keep running.`)) return;
          try { await api("POST", `/api/v1/nodes/${n.id}/${draining ? "undrain" : "drain"}`); await refresh(); } catch (e) { showError(e); }
        } }, draining ? "Undrain" : "Drain");
      return el("tr", { "data-node": n.id },
        el("td", { "data-label": "Node" }, n.name, el("br"), el("span", { class: "hint" }, n.address)),
        el("td", { "data-label": "Status" }, el("span", { class: "status status-" + n.status }, n.status)),
        el("td", { "data-label": "CPU" }, bar("CPU", cores(n.allocated.cpuMillis), cores(n.capacity.cpuMillis), " cores")),
        el("td", { "data-label": "Memory" }, bar("Memory", n.allocated.memoryMB, n.capacity.memoryMB, " MB")),
        el("td", { "data-label": "Agents" }, bar("Agents", n.allocated.agents, n.capacity.maxAgents)),
        el("td", {}, action));
    }));
  };
  return { refresh, section: el("section", { "aria-labelledby": "nodes-h" }, el("h2", { id: "nodes-h" }, "Nodes"),
    el("table", { "aria-labelledby": "nodes-h" }, el("thead", {}, el("tr", {}, ...["Node", "Status", "CPU", "Memory", "Agents", ""].map((h) => el("th", { scope: "col" }, h)))), tbody)) };
}

// orgsSection is every org with its caps, its use, and a form to change
// the caps (0: no limit).
function orgsSection() {
  const tbody = el("tbody");
  const refresh = async () => {
    const { orgs } = await api("GET", "/api/v1/orgs");
    tbody.replaceChildren(...orgs.map((o) => {
      const agents = el("input", { type: "number", min: "0", id: `caps-agents-${o.id}`, value: String(o.plan.maxAgents) });
      const running = el("input", { type: "number", min: "0", id: `caps-running-${o.id}`, value: String(o.plan.maxRunning) });
      const form = el("form", { class: "inline", "aria-label": `Caps of ${o.name}`, onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await api("PATCH", "/api/v1/orgs/" + o.id, { plan: { maxAgents: Number(agents.value), maxRunning: Number(running.value) } });
          await refresh();
        } catch (e) { showError(e); }
      } }, el("label", { for: agents.id }, "Agents"), agents, el("label", { for: running.id }, "Running"), running,
      el("button", { type: "submit", class: "secondary" }, "Save"));
      return el("tr", { "data-org": o.id },
        el("td", { "data-label": "Org" }, o.name),
        el("td", { "data-label": "Agents" }, bar("Agents", o.usage.agents, o.plan.maxAgents)),
        el("td", { "data-label": "Running" }, bar("Running", o.usage.running, o.plan.maxRunning)),
        el("td", { "data-label": "Created" }, date(o.createdAt)),
        el("td", { "data-label": "Caps" }, form));
    }));
  };
  return { refresh, section: el("section", { "aria-labelledby": "orgs-h" }, el("h2", { id: "orgs-h" }, "Orgs"),
    el("p", { class: "hint" }, "Caps of 0 are no limit. Agents counts every agent; running, those that hold resources."),
    el("table", { "aria-labelledby": "orgs-h" }, el("thead", {}, el("tr", {}, ...["Org", "Agents", "Running", "Created", "Caps"].map((h) => el("th", { scope: "col" }, h)))), tbody)) };
}

// signupSection is the sign-up mode, the invitations (made with their code
// shown once) and the accounts (promote, demote, remove).
async function signupSection(orgs) {
  const mode = el("select", { id: "signup-mode" }, ...[["open", "Open: anyone, with an org of their own"], ["invite", "Invitation only"], ["closed", "Closed"]]
    .map(([v, text]) => el("option", { value: v }, text)));
  const modeNote = el("p", { role: "status" });
  const modeForm = el("form", { id: "signup-form", class: "inline", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const c = await api("PATCH", "/api/v1/operator/config", { signup: mode.value });
      modeNote.textContent = "Sign-up is now " + c.signup + ".";
    } catch (e) { showError(e); }
  } }, el("label", { for: "signup-mode" }, "Who may sign up"), mode, el("button", { type: "submit" }, "Save"), modeNote);
  mode.value = (await api("GET", "/api/v1/operator/config")).signup;

  const invitations = el("tbody");
  const accounts = el("tbody");
  const refresh = async () => {
    const [{ invitations: invs }, { accounts: accs }] = await Promise.all([api("GET", "/api/v1/operator/invitations"), api("GET", "/api/v1/operator/accounts")]);
    const orgName = Object.fromEntries(orgs.map((o) => [o.id, o.name]));
    invitations.replaceChildren(...invs.map((i) => el("tr", { "data-invitation": i.id },
      el("td", { "data-label": "Email" }, i.email || "anyone"),
      el("td", { "data-label": "Org" }, i.orgId ? (orgName[i.orgId] || i.orgId) : "their own"),
      el("td", { "data-label": "Operator" }, i.operator ? "yes" : "no"),
      el("td", { "data-label": "Expires" }, date(i.expiresAt)),
      el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Withdraw the invitation for ${i.email || "anyone"}`, onclick: async () => {
        try { await api("DELETE", "/api/v1/operator/invitations/" + i.id); await refresh(); } catch (e) { showError(e); }
      } }, "Withdraw")))));
    accounts.replaceChildren(...accs.map((a) => el("tr", { "data-account": a.email },
      el("td", { "data-label": "Email" }, a.email),
      el("td", { "data-label": "Org" }, a.orgName),
      el("td", { "data-label": "Operator" }, a.operator ? "yes" : "no"),
      el("td", { "data-label": "Created" }, date(a.createdAt)),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "secondary", "aria-label": `${a.operator ? "Demote" : "Promote"} ${a.email}`, onclick: async () => {
          try { await api("PATCH", "/api/v1/operator/accounts/" + a.id, { operator: !a.operator }); await refresh(); } catch (e) { showError(e); }
        } }, a.operator ? "Demote" : "Make operator"),
        el("button", { type: "button", class: "danger", "aria-label": `Remove ${a.email}`, onclick: async () => {
          if (!confirm(`Remove the account ${a.email}? It is signed out everywhere; its org and agents stay.`)) return;
          try { await api("DELETE", "/api/v1/operator/accounts/" + a.id); await refresh(); } catch (e) { showError(e); }
        } }, "Remove")))));
  };

  const email = el("input", { id: "invite-email", type: "email", autocomplete: "off" });
  const org = el("select", { id: "invite-org" }, el("option", { value: "" }, "An org of their own"), ...orgs.map((o) => el("option", { value: o.id }, o.name)));
  const operator = el("input", { id: "invite-operator", type: "checkbox" });
  const created = el("div");
  const inviteForm = el("form", { id: "invite-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { operator: operator.checked };
    if (email.value) body.email = email.value;
    if (org.value) body.orgId = org.value;
    try {
      const inv = await api("POST", "/api/v1/operator/invitations", body);
      const copy = el("button", { type: "button", class: "secondary", onclick: async () => {
        await navigator.clipboard.writeText(inv.signupUrl);
        copy.textContent = "Copied";
      } }, "Copy link");
      created.replaceChildren(el("p", {}, "Send this sign-up link now: it is shown only once and admits one sign-up."),
        el("p", { class: "secret", id: "new-invitation" }, inv.signupUrl), copy);
      inviteForm.reset();
      await refresh();
    } catch (e) { showError(e); }
  } }, el("label", { for: "invite-email" }, "Email ", el("span", { class: "hint" }, "(optional: admit only this address)")), email,
  el("label", { for: "invite-org" }, "Org"), org,
  el("span", {}, operator, " ", el("label", { for: "invite-operator" }, "Operator account")),
  el("button", { type: "submit" }, "Make invitation"));

  return { refresh, section: el("section", { "aria-labelledby": "signup-h" }, el("h2", { id: "signup-h" }, "Sign-up and accounts"), modeForm,
    el("h3", { id: "invitations-h" }, "Invitations"), inviteForm, created,
    el("table", { "aria-labelledby": "invitations-h" }, el("thead", {}, el("tr", {}, ...["Email", "Org", "Operator", "Expires", ""].map((h) => el("th", { scope: "col" }, h)))), invitations),
    el("h3", { id: "accounts-h" }, "Accounts"),
    el("table", { "aria-labelledby": "accounts-h" }, el("thead", {}, el("tr", {}, ...["Email", "Org", "Operator", "Created", ""].map((h) => el("th", { scope: "col" }, h)))), accounts)) };
}

export async function operatorView() {
  const nodes = nodesSection();
  const orgs = orgsSection();
  const { orgs: orgList } = await api("GET", "/api/v1/orgs");
  const signup = await signupSection(orgList);
  await Promise.all([nodes.refresh(), orgs.refresh(), signup.refresh()]);
  // Nodes change on their own; the orgs table holds forms, refreshed on saving.
  every(5000, () => nodes.refresh().catch(() => {}));
  return [el("h1", {}, "Operator"), nodes.section, orgs.section, signup.section];
}
