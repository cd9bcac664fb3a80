// End-to-end check of single sign-on (OpenID Connect, `sso.providers`) on the hosted pages, in a
// real headless browser, against a real OpenID Provider (tests/browser/oidc-provider.mjs, the
// oidc-provider npm package) on another loopback port.
//
// Starts the gateway binary ($GATEWAY_BIN, default target/debug/gateway) on a free loopback port
// with a throwaway config and store (one provider `corp`: allowed_groups [engineering],
// role_mappings admins -> admin; a route /app with `auth: required`), then the provider with the
// gateway's callback as its redirect URI, and drives Debian's Chromium (/usr/bin/chromium, or
// $CHROMIUM_BIN) through playwright-core.
//
// Checks: the sign-in page shows "Sign in with Corp SSO"; alice signs in at the provider and
// lands on /app/ with the identity headers upstream (X-Auth-Provider: corp, X-Auth-Roles with
// admin, X-Auth-Email, X-Auth-Email-Verified, X-Auth-User-Id); /api/auth/me with the cookie
// session; the account page lists corp as linked; GET /api/auth/providers; carol (not in an
// allowed group) refused 403; bob (unverified email at the provider) refused 409 when
// bob@example.com already has a password account here; then the provider stopped and the gateway
// restarted with `auth.password_login: false` (a fresh process: no cached discovery document):
// no password form, JSON password sign-in refused 403, and the SSO button answers 503 "cannot be
// reached"; no console errors on the gateway's pages other than the refusals asked for.
//
//   npm ci --prefix tests/browser && cargo build && node tests/browser/sso.mjs
//
// Prints one line per check and a final `N passed, 0 failed`; exits 1 on the first failed check
// (the gateway's log is printed then). The gateway, the provider, the upstream and the browser
// are always stopped, and the whole run is bounded by $BROWSER_TEST_TIMEOUT_MS (default 60 s).

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  assert,
  cookieMap,
  freePort,
  launchChromium,
  run,
  sleep,
  startGateway,
  startUpstream,
  step,
  tempDir,
} from "./harness.mjs";
import { startProvider } from "./oidc-provider.mjs";

const PREFIX = "/api/auth";
const LOGIN = `${PREFIX}/login`;
const CALLBACK = `${PREFIX}/sso/corp/callback`;
const START = `${PREFIX}/sso/corp/start`;
const APP = "/app/";

/** The gateway's config lines (besides listen, admin, log, store) for `base` and `issuer`. */
function config(base, issuer, upstreamPort, passwordLogin) {
  return [
    "auth:",
    `  password_login: ${passwordLogin}`,
    "  password:",
    "    memory_kib: 1024",
    "    iterations: 1",
    "sso:",
    `  public_url: ${base}`,
    "  providers:",
    "    - id: corp",
    "      display_name: Corp SSO",
    `      issuer: ${issuer}`,
    "      client_id: gw",
    "      client_secret: s3cret",
    "      scopes: [openid, email, profile, groups]",
    "      allowed_groups: [engineering]",
    "      role_mappings:",
    "        admins: [admin]",
    "routes:",
    "  - name: app",
    "    path: /app",
    `    upstream: http://127.0.0.1:${upstreamPort}`,
    "    auth: required",
  ];
}

/** The pid of the gateway child process this script started (the harness keeps no handle out). */
function gatewayPid() {
  const out = execFileSync("ps", ["-o", "pid=,comm=", "--ppid", String(process.pid)], { encoding: "utf8" });
  const pids = out
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .filter(([, comm]) => comm === "gateway")
    .map(([pid]) => Number(pid));
  assert(pids.length === 1, `gateway children: ${JSON.stringify(out)}`);
  return pids[0];
}

/** Stops the gateway with that pid (SIGTERM) and waits until it has gone. */
async function stopGateway(pid) {
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    if (Date.now() > deadline) throw new Error(`gateway ${pid} still running 10 s after SIGTERM`);
    await sleep(50);
  }
}

async function main() {
  tempDir("gateway-sso-");
  const seen = [];
  const upstreamPort = await startUpstream((req, res) => {
    seen.push({ path: new URL(req.url, "http://x").pathname, headers: req.headers });
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><html lang="en"><head><title>t</title></head><body><p>app page for ${req.headers["x-auth-email"]}</p></body></html>`);
  });

  // The provider's port is chosen first (its issuer goes into the gateway's config); the provider
  // itself starts once the gateway's port (its redirect URI) is known. The gateway fetches the
  // discovery document on first use, not at start-up.
  const idpPort = await freePort();
  const issuer = `http://127.0.0.1:${idpPort}`;
  let base = await step("gateway with sso.providers corp starts and answers /healthz", () =>
    startGateway((b) => config(b, issuer, upstreamPort, true)),
  );
  const op = await step("the OpenID Provider starts with the gateway's callback as redirect URI", async () => {
    const p = await startProvider({
      port: idpPort,
      clientId: "gw",
      clientSecret: "s3cret",
      redirectUris: [`${base}${CALLBACK}`],
      postLogoutRedirectUris: [`${base}/`],
    });
    assert(p.issuer === issuer, `issuer ${p.issuer}, want ${issuer}`);
    return p;
  });
  let providerUp = true;
  process.on("exit", () => {
    if (providerUp) op.close();
  });

  const { context, page } = await launchChromium({ viewport: { width: 800, height: 900 } });

  // Console errors on the gateway's pages: the refusals asked for (their status lines, at the
  // callback and start endpoints) are expected; anything else fails the run.
  const consoleErrors = [];
  let expected = [];
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const url = m.location().url || "";
    if (url.endsWith("/favicon.ico")) return;
    if (url.startsWith(issuer)) return; // the provider's own pages are not under test
    const at = url ? new URL(url).pathname : "";
    if (expected.some(([p, re]) => p === at && re.test(m.text()))) return;
    consoleErrors.push(`${m.text()} (${url})`);
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  const ssoButton = () => page.locator('a[data-provider="corp"]');

  /** From the sign-in page (next=/app/): the button, then `account` at the provider's login page. */
  async function providerLogin(account) {
    await page.goto(`${base}${LOGIN}?next=${encodeURIComponent(APP)}`);
    await ssoButton().click();
    await page.waitForURL((u) => u.href.startsWith(`${issuer}/interaction/`));
    await page.locator('input[name="login"]').fill(account);
    await page.locator('input[name="password"]').fill("anything");
    await page.getByRole("button", { name: "Sign-in" }).click();
  }

  /** providerLogin, then the callback's answer: its status and the sign-in page's alert. */
  async function refusedAtCallback(account) {
    const [resp] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === CALLBACK),
      providerLogin(account),
    ]);
    await page.waitForLoadState("load");
    const alert = page.locator("p.error[role=alert]");
    const text = (await alert.count()) ? (await alert.innerText()).trim() : "(no p.error[role=alert])";
    const c = await cookieMap();
    return { status: resp.status(), text, session: Boolean(c.gw_access && c.gw_access.value), url: page.url() };
  }

  await step("the sign-in page shows 'Sign in with Corp SSO' (a[data-provider=corp] to the start URL with next)", async () => {
    await page.goto(`${base}${LOGIN}?next=${encodeURIComponent(APP)}`);
    const text = (await ssoButton().innerText()).trim();
    assert(text === "Sign in with Corp SSO", `the button says ${JSON.stringify(text)}`);
    const href = new URL(await ssoButton().getAttribute("href"), base);
    assert(href.pathname === START && href.searchParams.get("next") === APP, `href ${href}`);
    assert((await page.locator('input[name="password"]').count()) === 1, "no password form");
  });

  await step("alice signs in at the provider and lands on /app/ with the gateway's session", async () => {
    await providerLogin("alice");
    await page.waitForURL((u) => u.href.startsWith(base) && u.pathname === APP);
    await page.getByText("app page for alice@example.com").waitFor();
    const c = await cookieMap();
    assert(c.gw_access && c.gw_access.value, `no gw_access cookie (have ${Object.keys(c)})`);
  });

  await step("the upstream sees alice's identity headers (X-Auth-Provider: corp, roles user + admin)", async () => {
    const hit = seen.filter((r) => r.path === APP).pop();
    assert(hit, "the upstream saw no /app/ request");
    const h = hit.headers;
    const show = JSON.stringify(Object.fromEntries(Object.entries(h).filter(([k]) => k.startsWith("x-auth-"))));
    assert(h["x-auth-provider"] === "corp", `x-auth-provider: ${show}`);
    assert(h["x-auth-email"] === "alice@example.com", `x-auth-email: ${show}`);
    assert(h["x-auth-email-verified"] === "true", `x-auth-email-verified: ${show}`);
    assert(h["x-auth-user-id"] && h["x-auth-user-id"].length > 0, `x-auth-user-id: ${show}`);
    const roles = (h["x-auth-roles"] || "").split(",").map((r) => r.trim());
    assert(roles.includes("admin") && roles.includes("user"), `x-auth-roles: ${show}`);
  });

  await step("/api/auth/me answers alice with the cookie session", async () => {
    const r = await page.request.get(`${base}${PREFIX}/me`);
    const body = await r.text();
    assert(r.status() === 200, `HTTP ${r.status()} ${body}`);
    assert(body.includes("alice@example.com"), `body ${body}`);
  });

  await step("the account page lists corp as linked, with an Unlink button", async () => {
    await page.goto(`${base}${PREFIX}/account`);
    await page.getByText("Sign-in providers").first().waitFor();
    const li = page.locator('li[data-provider="corp"]');
    const text = (await li.innerText()).trim();
    assert(/linked/i.test(text) && !/not linked/i.test(text), `the entry says ${JSON.stringify(text)}`);
    assert((await li.getByRole("button", { name: "Unlink" }).count()) === 1, `no Unlink button: ${JSON.stringify(text)}`);
  });

  await step("GET /api/auth/providers lists corp, password_login true", async () => {
    const r = await fetch(`${base}${PREFIX}/providers`);
    const body = await r.json();
    assert(r.status === 200, `HTTP ${r.status}`);
    assert(body.password_login === true, JSON.stringify(body));
    assert(Array.isArray(body.providers) && body.providers.length === 1, JSON.stringify(body));
    const [p] = body.providers;
    assert(p.id === "corp" && p.display_name === "Corp SSO", JSON.stringify(body));
    assert(new URL(p.start_url, base).pathname === START, JSON.stringify(body));
  });

  await context.clearCookies();
  expected = [[CALLBACK, /status of 403/]];
  await step("carol (groups: contractors) is refused: 403, 'not in a group allowed here', no session", async () => {
    const r = await refusedAtCallback("carol");
    assert(r.status === 403, `HTTP ${r.status}, alert ${JSON.stringify(r.text)}`);
    assert(r.text.includes("not in a group allowed here"), `the alert says ${JSON.stringify(r.text)}`);
    assert(!r.session, "a session cookie was set");
  });

  // A password account for bob@example.com, made through the JSON API.
  const bobPassword = `granite orchard ${randomBytes(6).toString("hex")}`;
  await step("a password account for bob@example.com (POST /api/auth/signup), and JSON sign-in works", async () => {
    let r = await fetch(`${base}${PREFIX}/signup`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "bob@example.com", password: bobPassword }),
    });
    assert(r.status === 200 || r.status === 201, `signup: HTTP ${r.status} ${await r.text()}`);
    r = await fetch(`${base}${LOGIN}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "bob@example.com", password: bobPassword }),
    });
    assert(r.status === 200, `login: HTTP ${r.status} ${await r.text()}`);
  });

  await context.clearCookies();
  expected = [[CALLBACK, /status of 409/]];
  await step("bob (email unverified at the provider) is refused: 409, 'An account with this email address already exists'", async () => {
    const r = await refusedAtCallback("bob");
    assert(r.status === 409, `HTTP ${r.status}, alert ${JSON.stringify(r.text)}`);
    assert(r.text.includes("An account with this email address already exists"), `the alert says ${JSON.stringify(r.text)}`);
    assert(!r.session, "a session cookie was set");
  });

  // The provider goes away, and the gateway restarts with password_login: false. A fresh process
  // has no cached discovery document (a running one keeps using its copy while the provider is
  // unreachable), so the start endpoint has to reach the provider, and cannot.
  await op.close();
  providerUp = false;
  await step("the gateway restarts with auth.password_login: false (same store, provider stopped)", async () => {
    await stopGateway(gatewayPid());
    base = await startGateway((b) => config(b, issuer, upstreamPort, false));
  });

  await context.clearCookies();
  await step("password_login: false: the sign-in page has the SSO button and no password form", async () => {
    await page.goto(`${base}${LOGIN}?next=${encodeURIComponent(APP)}`);
    await ssoButton().waitFor();
    assert((await page.locator('input[name="password"]').count()) === 0, "a password input is shown");
  });

  await step("password_login: false: JSON password sign-in (bob's right password) is refused 403; providers says false", async () => {
    let r = await fetch(`${base}${LOGIN}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "bob@example.com", password: bobPassword }),
    });
    assert(r.status === 403, `login: HTTP ${r.status} ${await r.text()}`);
    r = await fetch(`${base}${PREFIX}/providers`);
    const body = await r.json();
    assert(body.password_login === false && body.providers.length === 1, JSON.stringify(body));
  });

  expected = [[START, /status of 503/]];
  await step("provider down: the SSO button answers 503, 'cannot be reached', on the sign-in page", async () => {
    const [resp] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === START),
      ssoButton().click(),
    ]);
    await page.waitForLoadState("load");
    const alert = page.locator("p.error[role=alert]");
    const text = (await alert.count()) ? (await alert.innerText()).trim() : "(no p.error[role=alert])";
    assert(resp.status() === 503, `HTTP ${resp.status()}, alert ${JSON.stringify(text)}`);
    assert(text.includes("cannot be reached"), `the alert says ${JSON.stringify(text)}`);
    const c = await cookieMap();
    assert(!(c.gw_access && c.gw_access.value), "a session cookie was set");
  });

  await step("no console errors or CSP violations in the gateway's pages", async () => {
    assert(consoleErrors.length === 0, consoleErrors.join(" | "));
  });
}

run(main);
