// @ts-self-types="./client.d.ts"
//
// The gateway's browser client: cookie sessions for single-page apps, no dependencies, no build.
//
//   import * as auth from "/api/auth/client.js";
//   await auth.login(email, password);
//   const user = await auth.me();            // the user, or null when signed out
//   const r = await auth.fetch("/api/items", { method: "POST", body: "..." });
//
// Served by the gateway at `{auth.prefix}/client.js`; the API prefix and origin are taken from
// this module's own URL, so it follows any `auth.prefix`. Requests to the gateway's origin are
// sent with `credentials: "include"` (the session lives in HttpOnly cookies the script never
// sees), carry `X-CSRF-Token` on unsafe methods, and on a 401 refresh the session once (one
// refresh shared by every request that failed at the same time) and are retried once. Requests to
// other origins pass through untouched: no CSRF token and no cookies are added to them.

const self = new URL(import.meta.url);
const ORIGIN = self.origin;
const PREFIX = self.pathname.replace(/\/client\.js$/, "");
const API = ORIGIN + PREFIX;
const SECURE = self.protocol === "https:";
// Over TLS the gateway names its cookies with the __Host-/__Secure- prefixes.
const CSRF_COOKIES = SECURE ? ["__Host-gw_csrf", "gw_csrf"] : ["gw_csrf", "__Host-gw_csrf"];
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS", "TRACE"]);
// Auth endpoints whose 401 means "wrong credentials" or "no session", never "refresh and retry".
const NO_RETRY = new Set(["/login", "/signup", "/refresh"].map((p) => PREFIX + p));

/** The error login, signup, logout and me reject with: `message` is the API's `detail`. */
export class ApiError extends Error {
  constructor(status, detail, response) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.response = response;
  }
}

function defaultOnUnauthenticated() {
  const next = window.location.pathname + window.location.search;
  window.location.assign(`${API}/login?next=${encodeURIComponent(next)}`);
}

const settings = { onUnauthenticated: defaultOnUnauthenticated };

/**
 * Changes how the client behaves. `onUnauthenticated` runs when a request got a 401 and the
 * session could not be refreshed (once for a burst of requests that failed together); the default
 * sends the browser to the gateway's sign-in page with `next` set to the current path
 * and query. Pass `null` to restore the default.
 */
export function configure(options = {}) {
  if ("onUnauthenticated" in options) {
    const f = options.onUnauthenticated;
    if (f != null && typeof f !== "function") throw new TypeError("onUnauthenticated must be a function");
    settings.onUnauthenticated = f || defaultOnUnauthenticated;
  }
}

/** Where the gateway's API lives: `{ origin, prefix }`. */
export const endpoint = Object.freeze({ origin: ORIGIN, prefix: PREFIX });

/** The CSRF token from the readable CSRF cookie, or null when there is no session. */
export function csrfToken() {
  const jar = typeof document === "undefined" ? "" : document.cookie;
  for (const name of CSRF_COOKIES) {
    for (const pair of jar.split(";")) {
      const i = pair.indexOf("=");
      if (i > 0 && pair.slice(0, i).trim() === name) {
        let v = pair.slice(i + 1).trim();
        if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1);
        if (v) return v;
      }
    }
  }
  return null;
}

// ---- refresh, single-flight ----

// Bumped whenever a new session may be in the cookies (refresh, login, signup): a 401 for a
// request sent before that is retried without another refresh.
let generation = 0;
let inflight = null;

// Bumped each time onUnauthenticated runs: requests sent before that do not run it again, so a
// burst of requests that all find the session gone reports it once.
let notices = 0;

/**
 * Refreshes the session with the refresh cookie, sharing one request among concurrent callers.
 * Resolves "ok" (a new session is in the cookies), "signed-out" (there is none to refresh) or
 * "error" (the gateway could not say).
 */
function refreshOnce() {
  if (!inflight) {
    // Cleared once settled (never synchronously, so a refresh that ends at once is still shared).
    const p = refreshNow().finally(() => {
      if (inflight === p) inflight = null;
    });
    inflight = p;
  }
  return inflight;
}

async function refreshNow() {
  const csrf = csrfToken();
  // No CSRF cookie, no session: the gateway refuses a cookie refresh without the token anyway.
  if (!csrf) return "signed-out";
  const r = await globalThis.fetch(`${API}/refresh`, {
    method: "POST",
    credentials: "include",
    headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
  });
  if (r.ok) {
    generation += 1;
    return "ok";
  }
  // 401: no such or an expired session; 403: the CSRF token does not belong to it. Anything else
  // (429, 503...) is not a verdict on the session: the 401 is returned, nobody is sent away.
  return r.status === 401 || r.status === 403 ? "signed-out" : "error";
}

/** Refreshes the session now (single-flight); resolves whether it worked. */
export async function refresh() {
  return (await refreshOnce()) === "ok";
}

// ---- fetch ----

function toGateway(url) {
  return url.origin === ORIGIN;
}

async function send(input, init, notify) {
  const request = input instanceof Request ? input : null;
  const base = typeof document === "undefined" ? ORIGIN : document.baseURI;
  const url = new URL(request ? request.url : String(input), base);
  if (!toGateway(url)) return globalThis.fetch(input, init);
  const method = ((init && init.method) || (request && request.method) || "GET").toUpperCase();
  // A Request's body can be read once: keep a copy for the retry.
  const spare = request ? request.clone() : null;
  const attempt = (req) => {
    const headers = new Headers((init && init.headers) || (req && req.headers) || undefined);
    if (!SAFE_METHODS.has(method)) {
      // Always the cookie's current value: a refresh renews it, so a retry needs the new one.
      const csrf = csrfToken();
      if (csrf) headers.set("X-CSRF-Token", csrf);
    }
    const credentials = (init && init.credentials) || "include";
    return globalThis.fetch(req || input, { ...init, headers, credentials });
  };
  const sentAt = generation;
  const noticesAtSend = notices;
  const first = await attempt(request);
  if (first.status !== 401 || NO_RETRY.has(url.pathname)) return first;
  // A session that arrived while this request was under way is tried without another refresh.
  const outcome = sentAt !== generation ? "ok" : await refreshOnce();
  if (outcome === "ok") return attempt(spare);
  if (outcome === "signed-out" && notify && notices === noticesAtSend) {
    notices += 1;
    settings.onUnauthenticated();
  }
  return first;
}

/**
 * `window.fetch` for the gateway's origin: cookies included, `X-CSRF-Token` added on unsafe
 * methods, and after a 401 one refresh (shared with concurrent requests) and one retry. When the
 * session cannot be refreshed, `onUnauthenticated` runs and the 401 response is returned.
 * Requests to other origins go to `window.fetch` unchanged. A body given as a stream cannot be
 * sent twice, so such a request is not retried successfully; strings, FormData, Blobs and
 * `Request` objects are.
 */
export { send_ as fetch };
function send_(input, init) {
  return send(input, init, true);
}

// ---- the auth API ----

async function failure(r) {
  let detail = r.statusText || `HTTP ${r.status}`;
  try {
    const body = await r.json();
    if (body && typeof body.detail === "string") detail = body.detail;
  } catch {
    // not JSON
  }
  return new ApiError(r.status, detail, r);
}

async function post(action, body) {
  return globalThis.fetch(`${API}${action}`, {
    method: "POST",
    credentials: "include",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
  });
}

async function session(r) {
  if (!r.ok) throw await failure(r);
  generation += 1;
  const body = await r.json();
  return body.user;
}

/** Signs in; resolves to the user. Rejects with an ApiError whose message is the API's detail. */
export async function login(email, password) {
  return session(await post("/login", { email, password }));
}

/** Creates an account and signs in; resolves to the user. Rejects like `login`. */
export async function signup(email, password, name) {
  const body = { email, password };
  if (name != null && name !== "") body.name = name;
  return session(await post("/signup", body));
}

/** Signs out (this session) and deletes the session cookies. */
export async function logout() {
  const headers = { Accept: "application/json" };
  const csrf = csrfToken();
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const r = await globalThis.fetch(`${API}/logout`, { method: "POST", credentials: "include", headers });
  if (!r.ok) throw await failure(r);
}

/** The signed-in user (refreshing an expired session first), or null when signed out. */
export async function me() {
  const r = await send(`${API}/me`, { headers: { Accept: "application/json" } }, false);
  if (r.status === 401) return null;
  if (!r.ok) throw await failure(r);
  return r.json();
}

export default { configure, csrfToken, endpoint, fetch: send_, login, logout, me, refresh, signup, ApiError };
