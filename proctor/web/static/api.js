// The HTTP API as the dashboard uses it: every call carries the session's bearer token.
const TOKEN_KEY = "proctor.token";
const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The token lives in this tab's session only: never a cookie, never localStorage.
export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  save: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

async function failure(response) {
  let code = "error";
  let message = `the server answered ${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") {
      code = body.error.code;
      message = body.error.message;
    }
  } catch {
    // not the API's JSON error shape: keep the status line
  }
  return new ApiError(response.status, code, message);
}

export async function request(path, { method = "GET", body, token, signal } = {}) {
  const headers = { Authorization: `Bearer ${token ?? session.token() ?? ""}` };
  const response = await fetch(API + path, { method, body, headers, signal, cache: "no-store" });
  if (!response.ok) {
    const error = await failure(response);
    if (response.status === 401 && token === undefined) {
      window.dispatchEvent(new CustomEvent("proctor:unauthorized", { detail: error }));
    }
    throw error;
  }
  return response;
}

export async function json(path, options) {
  return (await request(path, options)).json();
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// Streams a text response chunk by chunk to onText until it ends or signal aborts.
export async function streamText(path, onText, signal) {
  const response = await request(path, { signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    onText(decoder.decode(value, { stream: true }));
  }
  const rest = decoder.decode();
  if (rest) onText(rest);
}
