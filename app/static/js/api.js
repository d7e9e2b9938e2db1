// Calls to the service that served this page: same origin, API key from sessionStorage.

import { askForKey } from "./ui.js";

const KEY_STORE = "heatpose.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE);
}

function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

/** An error answer of the service, with a message written for people. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A readable message for the service's error envelope {"error": {"code", "message"}}. */
export function describeError(status, body, retryAfter) {
  const detail = body?.error?.message ?? "";
  const said = detail ? ` (the service says: ${detail})` : "";
  switch (status) {
    case 401:
      return `This service needs an API key, and none or a wrong one was sent${said}.`;
    case 413:
      return `Too large: the image, the upload or the number of files is over the service's limit${said}.`;
    case 415:
      return `Not an image the service can read; send JPEG, PNG, WebP or BMP${said}.`;
    case 503: {
      const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again shortly.";
      return `The service is busy or not ready.${wait}${said}`;
    }
    case 504:
      return `The service took too long for this request${said}.`;
    default:
      return `The service answered ${status}${detail ? `: ${detail}` : ""}.`;
  }
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const text = describeError(response.status, body, response.headers.get("Retry-After"));
  return new ApiError(response.status, body?.error?.code ?? "http_error", text);
}

/**
 * Call `path` on this page's origin with query `params`; `makeBody()` builds a fresh body per
 * attempt (or null for a GET). On 401 ask for the key and retry (twice at most).
 * Resolves to the Response (2xx) or throws ApiError with a readable message.
 */
async function call(path, makeBody, params = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    const body = makeBody ? makeBody() : null;
    const response = await fetch(url, { method: body ? "POST" : "GET", body, headers });
    if (response.ok) return response;
    const error = await errorOf(response);
    if (response.status !== 401 || attempt >= 2) throw error;
    const reason = key
      ? "The API key was not accepted. Enter the service's key:"
      : "This service needs an API key (HEATPOSE_API_KEY). Enter it:";
    const entered = await askForKey(reason);
    if (!entered) throw error;
    setApiKey(entered);
  }
}

/** POST the multipart form `makeForm()` builds to `path`; see `call`. */
export function postForm(path, makeForm, params = {}) {
  return call(path, makeForm, params);
}

/** GET `path` as JSON; see `call`. */
export async function getJson(path) {
  return (await call(path, null)).json();
}

/** Ask for the key after the stream was refused (close code 1008); false when cancelled. */
export async function renewKey(reason) {
  const entered = await askForKey(reason);
  if (entered) setApiKey(entered);
  return Boolean(entered);
}
