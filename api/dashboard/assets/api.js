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

// request makes one call: body is sent as JSON, or as it is when it is
// FormData (a file upload, which the browser frames as multipart/form-data
// with its boundary). Errors throw APIError with the API's code.
async function request(method, path, body) {
  const headers = {};
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, { method, headers, credentials: "same-origin", body: payload });
  if (!res.ok) {
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not the API's error: a proxy's page */ }
    throw new APIError(res.status, data);
  }
  return res;
}

// api makes a call whose answer is JSON (null when empty).
export async function api(method, path, body) {
  const text = await (await request(method, path, body)).text();
  return text ? JSON.parse(text) : null;
}

// apiText GETs an answer that is plain text (an agent's container logs),
// with its headers.
export async function apiText(path) {
  const res = await request("GET", path);
  return { text: await res.text(), headers: res.headers };
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
