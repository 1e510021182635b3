import { api, apiText } from "/app/assets/api.js";
import { el, date, showError, every, money, statusCell } from "/app/assets/ui.js";
import { composeSection } from "/app/assets/compose.js";

// agentsView is the org's agents, refreshed every 2 s, and the form that
// creates one.
export async function agentsView() {
  const [{ models }, { scopes }] = await Promise.all([api("GET", "/api/v1/models"), api("GET", "/api/v1/scopes")]);
  const scopeName = Object.fromEntries(scopes.map((s) => [s.id, s.name]));
  const costs = {};
  const tbody = el("tbody");
  const refresh = async () => {
    const { agents } = await api("GET", "/api/v1/agents?limit=200");
    tbody.replaceChildren(...agents.map((a) => el("tr", { "data-agent": a.agentId },
      el("td", { "data-label": "Name" }, el("a", { href: "/app/agents/" + a.agentId }, a.name)),
      el("td", { "data-label": "Status" }, statusCell(a)),
      el("td", { "data-label": "Model" }, a.model || "default"),
      el("td", { "data-label": "Scope" }, a.scopeId ? (scopeName[a.scopeId] || a.scopeId) : "none"),
      el("td", { "data-label": "Created" }, date(a.createdAt)),
      el("td", { "data-label": "Cost" }, a.agentId in costs ? money(costs[a.agentId]) : "—"))));
    return agents;
  };
  const refreshCosts = async (agents) => {
    for (const a of agents.filter((a) => a.status === "RUNNING")) {
      try { costs[a.agentId] = (await api("GET", `/api/v1/agents/${a.agentId}/usage`)).totalCost; } catch { /* not ready */ }
    }
  };
  const field = (id, label, input) => [el("label", { for: id }, label), input];
  const name = el("input", { id: "agent-name", required: "", maxlength: "100" });
  const prompt = el("textarea", { id: "agent-prompt", rows: "3" });
  const hidden = el("textarea", { id: "agent-hidden", rows: "2" });
  // "Default" sends no model: the server resolves the org's or the
  // cluster's default, as for an API call without one.
  const def = models.find((m) => m.default);
  const model = el("select", { id: "agent-model" }, el("option", { value: "" }, "Default" + (def ? ` (${def.name})` : "")),
    ...models.map((m) => el("option", { value: m.id }, m.name)));
  const scope = el("select", { id: "agent-scope" }, el("option", { value: "" }, "none"), ...scopes.map((s) => el("option", { value: s.id }, s.name)));
  const note = el("p", { role: "status" });
  const form = el("form", { id: "create-agent", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { name: name.value };
    if (model.value) body.model = model.value;
    if (prompt.value) body.initialPrompt = prompt.value;
    if (hidden.value) body.hiddenPrompt = hidden.value;
    if (scope.value) body.scopeId = scope.value;
    note.textContent = "Creating " + name.value + "…";
    try {
      const a = await api("POST", "/api/v1/agents", body);
      note.textContent = "Created " + name.value + ".";
      form.reset();
      await refresh();
      return a;
    } catch (e) { note.textContent = ""; showError(e); }
  } },
  ...field("agent-name", "Name", name), ...field("agent-prompt", "Initial prompt", prompt),
  ...field("agent-hidden", "Hidden prompt", hidden), ...field("agent-model", "Model", model),
  ...field("agent-scope", "Scope", scope), el("button", { type: "submit" }, "Create agent"), note);
  const agents = await refresh();
  refreshCosts(agents).then(refresh);
  every(2000, () => refresh().catch(() => {}));
  every(10000, async () => { await refreshCosts(await refresh()); await refresh(); });
  return [el("h1", {}, "Agents"),
    el("table", { "aria-label": "Agents" }, el("thead", {}, el("tr", {}, ...["Name", "Status", "Model", "Scope", "Created", "Cost"].map((h) => el("th", { scope: "col" }, h)))), tbody),
    el("h2", {}, "New agent"), form];
}

// textOf is a message's text parts.
function textOf(m) {
  return (m.info.parts || []).filter((p) => p.type === "text").map((p) => p.text).join("\n");
}

// logLines is how much of an agent's container output its page shows.
const logLines = 200;

// logsSection shows the tail of the agent's container output. It is loaded
// when asked (Refresh) and when the agent starts running, not every 2 s
// with the rest of the page: up to a megabyte each time is too much to poll.
function logsSection(id) {
  const out = el("pre", { id: "agent-logs", class: "logs", tabindex: "0", "aria-labelledby": "logs-h", "aria-describedby": "logs-note" });
  const note = el("p", { id: "logs-note", role: "status" }, "Not loaded yet.");
  const load = async () => {
    note.textContent = "Loading…";
    try {
      const { text, headers } = await apiText(`/api/v1/agents/${id}/logs?lines=${logLines}`);
      out.textContent = text;
      const what = headers.get("Log-Truncated") === "true" ? `The last ${logLines} lines` : "All of it";
      note.textContent = text ? `${what}, as of ${new Date().toLocaleTimeString()}.` : "The container has printed nothing yet.";
    } catch (e) {
      if (e.code === "agent_not_running") {
        note.textContent = "The agent is not running: start it to see its container's output.";
        return;
      }
      note.textContent = "Could not load the logs.";
      showError(e);
    }
  };
  const section = el("section", { "aria-labelledby": "logs-h" }, el("h2", { id: "logs-h" }, "Logs"),
    el("p", { class: "hint" }, `What the agent's container printed to stdout and stderr, last ${logLines} lines.`),
    el("p", {}, el("button", { type: "button", id: "refresh-logs", class: "secondary", onclick: load }, "Refresh logs")),
    note, out);
  return { section, load };
}

// filesSection uploads a file into the agent's /workspace/uploads, where
// the agent can read it, and says where it landed.
function filesSection(id) {
  const input = el("input", { type: "file", id: "upload-file", name: "file", required: "", "aria-describedby": "upload-hint" });
  const note = el("p", { id: "upload-note", role: "status" });
  const form = el("form", { id: "upload-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const file = input.files[0];
    if (!file) return;
    const body = new FormData();
    body.append("file", file);
    note.textContent = "Uploading " + file.name + "…";
    try {
      const up = await api("POST", `/api/v1/agents/${id}/files`, body);
      note.textContent = `Uploaded ${up.name} (${up.size} bytes) to ${up.path}.`;
      form.reset();
    } catch (e) { note.textContent = ""; showError(e); }
  } },
  el("label", { for: "upload-file" }, "File to upload"),
  el("p", { id: "upload-hint", class: "hint" }, "Text, documents, data, code or images, up to 50 MB (100 MB in all per agent). The agent finds it in /workspace/uploads."),
  input, el("button", { type: "submit" }, "Upload"), note);
  return el("section", { "aria-labelledby": "files-h" }, el("h2", { id: "files-h" }, "Files"), form);
}

// agentView is one agent: status and actions, its own UI in a frame, its
// conversation with usage, the permission requests and questions that wait
// for an answer, refreshed every 2 s; file uploads; and its container's
// logs, loaded when asked.
export async function agentView(id) {
  const head = el("div");
  const ui = el("section", { "aria-labelledby": "ui-h" });
  const pending = el("section", { "aria-labelledby": "pending-h" });
  const history = el("section", { "aria-labelledby": "history-h" });
  const files = filesSection(id);
  const logs = logsSection(id);
  let frame = null;
  let wasRunning = null; // the first refresh loads the logs, or says why there are none
  const act = (verb) => el("button", { type: "button", class: verb === "delete" ? "danger" : "secondary", "data-action": verb, onclick: async () => {
    try {
      if (verb === "delete") {
        if (!confirm("Delete this agent and its workspace?")) return;
        await api("DELETE", "/api/v1/agents/" + id);
        history.replaceChildren();
        location.assign("/app/");
        return;
      }
      await api("POST", `/api/v1/agents/${id}/${verb}`);
      await refresh();
    } catch (e) { showError(e); }
  } }, verb[0].toUpperCase() + verb.slice(1));
  const refresh = async () => {
    const a = await api("GET", "/api/v1/agents/" + id);
    head.replaceChildren(el("h1", {}, a.name), el("p", {}, statusCell(a), a.errorMsg ? " — " + a.errorMsg : ""),
      el("p", { class: "actions" }, act("stop"), act("start"), act("restart"), act("delete")));
    const running = a.status === "RUNNING";
    if (running !== wasRunning) {
      wasRunning = running;
      logs.load(); // what it printed while starting, or that it stopped
    }
    if (!running) {
      pending.replaceChildren();
      return;
    }
    if (!frame) {
      frame = el("iframe", { id: "agent-ui", src: a.url, title: "The agent's own web UI" });
      ui.replaceChildren(el("h2", { id: "ui-h" }, "Agent UI"), frame, el("p", {}, el("a", { href: a.url, target: "_blank", rel: "noopener" }, "Open in a new tab")));
    }
    const [{ permissions }, { questions }] = await Promise.all([
      api("GET", `/api/v1/agents/${id}/permissions`), api("GET", `/api/v1/agents/${id}/questions`)]);
    const reply = (p, r) => el("button", { type: "button", class: r === "reject" ? "danger" : "", "data-reply": r, onclick: async () => {
      try { await api("POST", `/api/v1/agents/${id}/permissions/${p.id}/reply`, { reply: r }); await refresh(); } catch (e) { showError(e); }
    } }, { once: "Allow once", always: "Always allow", reject: "Reject" }[r]);
    pending.replaceChildren(el("h2", { id: "pending-h" }, "Waiting for you"),
      ...(permissions.length + questions.length === 0 ? [el("p", {}, "Nothing.")] : []),
      ...permissions.map((p) => el("div", { class: "request", "data-permission": p.id },
        el("p", {}, `The agent asks to ${p.permission}: ${(p.patterns || []).join(", ")}`),
        reply(p, "once"), reply(p, "always"), reply(p, "reject"))),
      ...questions.map((q) => el("div", { class: "request", "data-question": q.id },
        ...q.questions.map((item, i) => el("fieldset", {}, el("legend", {}, item.question),
          ...item.options.map((o) => el("button", { type: "button", onclick: async () => {
            const answers = q.questions.map((_, j) => (j === i ? [o.label] : []));
            try { await api("POST", `/api/v1/agents/${id}/questions/${q.id}/reply`, { answers }); await refresh(); } catch (e) { showError(e); }
          } }, o.label)))))));
    const { sessions } = await api("GET", `/api/v1/agents/${id}/messages`);
    history.replaceChildren(el("h2", { id: "history-h" }, "Conversation"),
      ...sessions.map((s) => el("article", {}, el("h3", {}, s.title || s.sessionId),
        el("p", { class: "usage" }, `${s.usage.tokens.total} tokens · ${money(s.usage.cost)}`),
        ...s.messages.map((m) => el("div", { class: "message " + m.info.role },
          el("strong", {}, m.info.role === "user" ? "You" : "Agent"), " ", textOf(m),
          m.info.tokens ? el("span", { class: "usage" }, ` (${m.info.tokens.total} tokens, ${money(m.info.cost)})`) : "")))));
  };
  await refresh();
  every(2000, () => refresh().catch(() => {}));
  return [head, ui, pending, composeSection(id), history, files, logs.section];
}
