import { api } from "/app/assets/api.js";
import { el, showError } from "/app/assets/ui.js";

// composeSection sends the agent a message, in a new session or in one of
// its sessions (the conversation below shows the reply as it comes).
export function composeSection(id) {
  const message = el("textarea", { id: "compose-message", rows: "3", required: "" });
  const session = el("select", { id: "compose-session" }, el("option", { value: "" }, "A new session"));
  const note = el("p", { role: "status" });
  // The sessions to choose from, refreshed when the section is used.
  const loadSessions = async () => {
    const keep = session.value;
    const { sessions } = await api("GET", `/api/v1/agents/${id}/messages`);
    session.replaceChildren(el("option", { value: "" }, "A new session"),
      ...sessions.map((s) => el("option", { value: s.sessionId }, s.title || s.sessionId)));
    session.value = keep;
  };
  session.addEventListener("focus", () => loadSessions().catch(() => {}));
  const form = el("form", { id: "compose", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { message: message.value };
    if (session.value) body.sessionId = session.value;
    try {
      await api("POST", `/api/v1/agents/${id}/messages`, body);
      note.textContent = "Sent.";
      message.value = "";
    } catch (e) { note.textContent = ""; showError(e); }
  } }, el("label", { for: "compose-message" }, "Message"), message,
  el("label", { for: "compose-session" }, "Session"), session,
  el("button", { type: "submit" }, "Send"), note);
  loadSessions().catch(() => {});
  return el("section", { "aria-labelledby": "compose-h" }, el("h2", { id: "compose-h" }, "Send a message"), form);
}
