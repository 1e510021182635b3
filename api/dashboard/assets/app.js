import { api, session } from "/app/assets/api.js";
import { showError, clearTimers } from "/app/assets/ui.js";

// The dashboard's shell: it routes by path under /app/ to a view, each a
// module of its own.
const view = document.getElementById("view");

// lazy is a view loaded with its page: a page fetches the shell's modules
// and its own view's, not every view's — a browser opens at most six
// connections to a host, and a dozen modules at once wait in line for them
// (a page once stayed on "Loading…" with two of them never fetched).
const lazy = (module, name) => async (...args) => (await import(module))[name](...args);

// routes are the views by path prefix, the first match wins; the rest of
// the path is the view's argument. Anything else is the agents' list.
const routes = [
  ["/app/tokens", () => lazy("/app/assets/tokens.js", "tokensView")()],
  ["/app/agents/", (rest) => lazy("/app/assets/agents.js", "agentView")(decodeURIComponent(rest))],
  ["/app/scopes/", (rest) => lazy("/app/assets/scopes.js", "scopeView")(decodeURIComponent(rest))],
  ["/app/scopes", () => lazy("/app/assets/scopes.js", "scopesView")()],
  ["/app/team", () => lazy("/app/assets/team.js", "teamView")(current)],
  ["/app/operator", () => lazy("/app/assets/operator.js", "operatorView")()],
];
const agentsList = lazy("/app/assets/agents.js", "agentsView");

// markCurrent marks the nav link of the page shown with aria-current (the
// CSS underlines it too): "page" on the page itself, "true" on a page
// under it (an agent's under Agents). The longest matching link wins, as
// /app/ matches every path.
function markCurrent(path) {
  const links = [...document.querySelectorAll("header nav a")];
  const under = (href) => path === href || path.startsWith(href.endsWith("/") ? href : href + "/");
  const current = links.filter((a) => under(a.getAttribute("href")))
    .sort((a, b) => b.getAttribute("href").length - a.getAttribute("href").length)[0];
  for (const a of links) a.removeAttribute("aria-current");
  if (current) current.setAttribute("aria-current", current.getAttribute("href") === path ? "page" : "true");
}

async function render() {
  try {
    clearTimers();
    const path = location.pathname;
    markCurrent(path);
    const match = routes.find(([prefix]) => path.startsWith(prefix));
    const parts = match ? await match[1](path.slice(match[0].length)) : await agentsList();
    view.replaceChildren(...parts);
    const h1 = view.querySelector("h1");
    document.title = h1 ? `${h1.textContent} · agenthost` : "agenthost";
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
