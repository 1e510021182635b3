import { api, session } from "/app/assets/api.js";
import { showError, clearTimers } from "/app/assets/ui.js";
import { tokensView } from "/app/assets/tokens.js";
import { agentsView, agentView } from "/app/assets/agents.js";
import { teamView } from "/app/assets/team.js";
import { operatorView } from "/app/assets/operator.js";

// The dashboard's shell: it routes by path under /app/ to a view, each a
// module of its own.
const view = document.getElementById("view");

// routes are the views by path prefix, the first match wins; the rest of
// the path is the view's argument. Anything else is the agents' list.
const routes = [
  ["/app/tokens", () => tokensView()],
  ["/app/agents/", (rest) => agentView(decodeURIComponent(rest))],
  ["/app/team", () => teamView(current)],
  ["/app/operator", () => operatorView()],
];

async function render() {
  try {
    clearTimers();
    const path = location.pathname;
    const match = routes.find(([prefix]) => path.startsWith(prefix));
    const parts = match ? await match[1](path.slice(match[0].length)) : await agentsView();
    view.replaceChildren(...parts);
  } catch (e) {
    view.replaceChildren();
    showError(e);
  }
}

document.getElementById("signout").addEventListener("click", async () => {
  await api("POST", "/api/v1/auth/signout");
  location.assign("/app/signin");
});

const current = await session();
if (!current) {
  location.assign("/app/signin");
} else {
  document.getElementById("who").textContent = `${current.account.email} · ${current.org.name}`;
  // Operator accounts also get the operator's pages (the API decides; this
  // only shows the link).
  document.getElementById("nav-operator").hidden = !current.account.operator;
  await render();
}
