import { api } from "/app/assets/api.js";

// Sign-in and sign-up pages: post the form as JSON, go to the dashboard.
const form = document.querySelector("form");
const error = document.getElementById("error");
// A sign-up link carries its invitation code: /app/signup?invitation=…
const code = new URLSearchParams(location.search).get("invitation");
if (code && form.elements.invitation) form.elements.invitation.value = code;
form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  error.hidden = true;
  const body = Object.fromEntries(new FormData(form));
  for (const [k, v] of Object.entries(body)) if (v === "") delete body[k];
  try {
    await api("POST", form.id === "signup" ? "/api/v1/auth/signup" : "/api/v1/auth/signin", body);
    location.assign("/app/");
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
});
