// The dashboard calls the platform's own REST API with the session cookie;
// writes carry the CSRF token the session gives (docs/api.md, "Accounts").
let csrf = "";

export class APIError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

export async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new APIError(res.status, data);
  return data;
}

// session loads who is signed in and the CSRF token; null when no one is.
export async function session() {
  try {
    const s = await api("GET", "/api/v1/auth/session");
    csrf = s.csrfToken;
    return s;
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

export function setCSRF(token) { csrf = token; }
