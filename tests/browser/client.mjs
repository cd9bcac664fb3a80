// End-to-end check of the browser client module (`/api/auth/client.js`) in a real headless browser.
//
// Starts a small Node HTTP server as the upstream (an HTML page that imports the module, and a
// JSON endpoint that echoes what it was sent), the gateway binary ($GATEWAY_BIN, default
// target/debug/gateway) on a free loopback port in front of it with `transparent_refresh: false`
// (so an expired access cookie is a 401 the module must handle), and drives Debian's Chromium
// (/usr/bin/chromium, or $CHROMIUM_BIN) through playwright-core: sign-up and errors, `me()`, five
// concurrent `fetch`es after the access cookie is gone (all succeed, one refresh), the CSRF header
// on POST, sign-out, `onUnauthenticated` and the default redirect to the sign-in page.
//
//   npm ci --prefix tests/browser && cargo build && node tests/browser/client.mjs
//
// Prints one line per check and a final `N passed, 0 failed`; exits 1 on the first failed check
// (the gateway's log is printed then). The gateway, the upstream and the browser are always
// stopped, and the whole run is bounded by $BROWSER_TEST_TIMEOUT_MS (default 60 s).

import { randomBytes } from "node:crypto";
import {
  assert,
  cookieMap,
  gatewayOutput,
  launchChromium,
  run,
  sleep,
  startGateway,
  startUpstream,
  step,
  tempDir,
} from "./harness.mjs";

// ---- the upstream: a page that imports the module, and an echoing JSON endpoint ----

const PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>client.js test page</title><link rel="icon" href="data:,"></head>
<body>
<h1>client.js test page</h1>
<script>
  // Every fetch the page makes (the module's included), to count refreshes from inside.
  window.fetchLog = [];
  const realFetch = window.fetch.bind(window);
  window.fetch = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input), document.baseURI);
    const method = ((init && init.method) || (input instanceof Request && input.method) || "GET").toUpperCase();
    window.fetchLog.push(method + " " + url.pathname);
    return realFetch(input, init);
  };
</script>
<script type="module">
  import * as client from "/api/auth/client.js";
  import defaultExport from "/api/auth/client.js";
  window.client = client;
  window.clientDefault = defaultExport;
  document.body.dataset.ready = "yes";
</script>
</body>
</html>
`;

async function startClientUpstream() {
  const port = await startUpstream((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const url = new URL(req.url, "http://upstream");
      if (url.pathname === "/app/data") {
        res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
        res.end(
          JSON.stringify({
            method: req.method,
            user: req.headers["x-auth-email"] || null,
            csrf_header: Boolean(req.headers["x-csrf-token"]),
            cookie: req.headers.cookie || null,
            body,
          }),
        );
        return;
      }
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
      res.end(PAGE);
    });
  });
  return `http://127.0.0.1:${port}`;
}

function startClientGateway(upstreamUrl) {
  return startGateway(() => [
    "auth:",
    // The module, not the gateway, must recover from the expired access cookie.
    "  transparent_refresh: false",
    "  password:",
    "    memory_kib: 1024",
    "    iterations: 1",
    "routes:",
    "  - name: data",
    "    path: /app/data",
    `    upstream: ${JSON.stringify(upstreamUrl)}`,
    "    auth: required",
    "  - name: page",
    "    path: /app",
    `    upstream: ${JSON.stringify(upstreamUrl)}`,
    "    auth: public",
  ]);
}

/** How many refresh requests the gateway's access log has seen so far. */
function refreshesInLog() {
  return gatewayOutput()
    .split("\n")
    .filter((l) => /\baccess\b/.test(l) && /method=POST/.test(l) && /path=\/api\/auth\/refresh\b/.test(l)).length;
}

async function main() {
  tempDir("gateway-client-");
  const upstreamUrl = await step("Node upstream starts", startClientUpstream);
  const base = await step("gateway starts and answers /healthz", () => startClientGateway(upstreamUrl));
  const { context, page } = await launchChromium();

  // Uncaught errors fail the run; of the console errors, only the browser's notes about the
  // 401/403/409 answers the checks provoke on purpose are expected.
  const consoleErrors = [];
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (/status of (401|403|409)\b/.test(m.text())) return;
    consoleErrors.push(`${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  const email = `grace.${randomBytes(4).toString("hex")}@example.com`;
  const password = `indigo lantern ${randomBytes(6).toString("hex")}`;
  const pagePath = "/app/page?tab=1";

  await step("GET /api/auth/client.js: text/javascript, public max-age=300, nosniff", async () => {
    const r = await context.request.get(`${base}/api/auth/client.js`);
    const h = r.headers();
    assert(r.status() === 200, `status ${r.status()}`);
    assert(h["content-type"] === "text/javascript; charset=utf-8", `content-type ${h["content-type"]}`);
    assert(h["cache-control"] === "public, max-age=300", `cache-control ${h["cache-control"]}`);
    assert(h["x-content-type-options"] === "nosniff", `x-content-type-options ${h["x-content-type-options"]}`);
    const d = await context.request.get(`${base}/api/auth/client.d.ts`);
    assert(d.status() === 200, `client.d.ts status ${d.status()}`);
    assert((await d.text()).includes("export declare function me(): Promise<User | null>"), "client.d.ts lacks me()");
  });

  await step(`a page served through a public route (${pagePath}) imports the module`, async () => {
    const resp = await page.goto(`${base}${pagePath}`);
    assert(resp.status() === 200, `status ${resp.status()}`);
    await page.waitForSelector("body[data-ready=yes]");
    const names = await page.evaluate(() => Object.keys(window.client).sort().join(","));
    const want = "ApiError,configure,csrfToken,default,endpoint,fetch,login,logout,me,refresh,signup";
    assert(names === want, `exports are ${names}`);
    const ep = await page.evaluate(() => window.client.endpoint);
    assert(ep.prefix === "/api/auth" && ep.origin === base, `endpoint ${JSON.stringify(ep)}`);
    assert(await page.evaluate(() => window.clientDefault.fetch === window.client.fetch), "default export differs");
  });

  await step("me() before signing in is null, without a refresh attempt", async () => {
    const r = await page.evaluate(async () => {
      window.fetchLog.length = 0;
      return { user: await window.client.me(), log: [...window.fetchLog] };
    });
    assert(r.user === null, `me() = ${JSON.stringify(r.user)}`);
    assert(r.log.join() === "GET /api/auth/me", `requests: ${r.log}`);
  });

  await step("signup(email, password, name) resolves to the user and sets the session cookies", async () => {
    const user = await page.evaluate(([e, p]) => window.client.signup(e, p, "Grace Hopper"), [email, password]);
    assert(user && user.email === email && user.name === "Grace Hopper", `user ${JSON.stringify(user)}`);
    const c = await cookieMap();
    for (const n of ["gw_access", "gw_refresh", "gw_csrf"]) assert(c[n], `no ${n} cookie (have ${Object.keys(c)})`);
    // transparent_refresh: false, so the refresh cookie only goes to the auth API.
    assert(c.gw_refresh.path === "/api/auth", `gw_refresh Path=${c.gw_refresh.path}`);
  });

  await step("errors reject with the API's detail (signup again: 409, wrong password: 401)", async () => {
    const r = await page.evaluate(
      async ([e, p]) => {
        const out = [];
        for (const f of [() => window.client.signup(e, p), () => window.client.login(e, "not the password at all")]) {
          try {
            await f();
            out.push("resolved");
          } catch (err) {
            out.push(`${err instanceof Error}|${err instanceof window.client.ApiError}|${err.status}|${err.message}`);
          }
        }
        return out;
      },
      [email, password],
    );
    assert(r[0] === "true|true|409|Email already registered", `signup again: ${r[0]}`);
    assert(r[1] === "true|true|401|Incorrect email or password", `wrong password: ${r[1]}`);
  });

  await step("me() resolves to the signed-in user", async () => {
    const user = await page.evaluate(() => window.client.me());
    assert(user && user.email === email, `me() = ${JSON.stringify(user)}`);
  });

  const oldAccess = (await cookieMap()).gw_access.value;
  await step("access cookie deleted: 5 concurrent fetch('/app/data') all succeed after ONE refresh", async () => {
    await context.clearCookies({ name: "gw_access" });
    const c0 = await cookieMap();
    assert(!c0.gw_access && c0.gw_refresh && c0.gw_csrf, `cookies: ${Object.keys(c0)}`);
    const logBefore = refreshesInLog();
    const r = await page.evaluate(async () => {
      window.fetchLog.length = 0;
      const rs = await Promise.all([1, 2, 3, 4, 5].map(() => window.client.fetch("/app/data")));
      const bodies = await Promise.all(rs.map((x) => x.json()));
      return { statuses: rs.map((x) => x.status), bodies, log: [...window.fetchLog] };
    });
    assert(r.statuses.every((s) => s === 200), `statuses ${r.statuses}`);
    assert(r.bodies.every((b) => b.user === email), `bodies ${JSON.stringify(r.bodies)}`);
    assert(r.bodies.every((b) => b.cookie === null || !/gw_/.test(b.cookie)), "gateway cookies reached the upstream");
    const refreshes = r.log.filter((l) => l === "POST /api/auth/refresh").length;
    assert(refreshes === 1, `${refreshes} refresh requests in the page: ${r.log}`);
    assert(r.log.filter((l) => l === "GET /app/data").length === 10, `requests: ${r.log}`);
    // The gateway agrees (its access log line may trail the response by a moment).
    const until = Date.now() + 2_000;
    while (refreshesInLog() - logBefore < 1 && Date.now() < until) await sleep(50);
    await sleep(100);
    const inLog = refreshesInLog() - logBefore;
    assert(inLog === 1, `${inLog} refresh requests in the gateway's log`);
    const c = await cookieMap();
    assert(c.gw_access && c.gw_access.value !== oldAccess, "no fresh gw_access cookie");
  });

  await step("a cookie POST without X-CSRF-Token is refused (403) by the gateway", async () => {
    const r = await page.evaluate(async () => {
      const x = await fetch("/app/data", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      return { status: x.status, body: await x.json() };
    });
    assert(r.status === 403, `status ${r.status}: ${JSON.stringify(r.body)}`);
    assert(r.body.detail === "CSRF token missing or invalid", `detail ${r.body.detail}`);
  });

  await step("client.fetch POST carries X-CSRF-Token: 200, the upstream gets the body", async () => {
    const r = await page.evaluate(async () => {
      const x = await window.client.fetch("/app/data", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ n: 1 }),
      });
      return { status: x.status, body: await x.json() };
    });
    assert(r.status === 200, `status ${r.status}: ${JSON.stringify(r.body)}`);
    assert(r.body.method === "POST" && r.body.body === '{"n":1}' && r.body.csrf_header, `upstream saw ${JSON.stringify(r.body)}`);
  });

  await step("access cookie deleted: 3 concurrent POSTs refresh once and retry with the new CSRF token", async () => {
    await context.clearCookies({ name: "gw_access" });
    const csrfBefore = (await cookieMap()).gw_csrf.value;
    const r = await page.evaluate(async () => {
      window.fetchLog.length = 0;
      const rs = await Promise.all(
        [1, 2, 3].map((n) =>
          window.client.fetch(new Request("/app/data", { method: "POST", body: `request ${n}` })),
        ),
      );
      const bodies = await Promise.all(rs.map((x) => x.json()));
      return { statuses: rs.map((x) => x.status), bodies, log: [...window.fetchLog] };
    });
    assert(r.statuses.every((s) => s === 200), `statuses ${r.statuses}: ${JSON.stringify(r.bodies)}`);
    const sent = r.bodies.map((b) => b.body).sort().join(",");
    assert(sent === "request 1,request 2,request 3", `bodies the upstream got: ${sent}`);
    const refreshes = r.log.filter((l) => l === "POST /api/auth/refresh").length;
    assert(refreshes === 1, `${refreshes} refresh requests: ${r.log}`);
    assert((await cookieMap()).gw_csrf.value !== csrfBefore, "the CSRF cookie was not renewed by the refresh");
  });

  await step("logout() clears the session; me() is then null", async () => {
    const user = await page.evaluate(async () => {
      await window.client.logout();
      return window.client.me();
    });
    assert(user === null, `me() after logout = ${JSON.stringify(user)}`);
    const c = await cookieMap();
    const left = ["gw_access", "gw_refresh", "gw_csrf"].filter((n) => c[n] && c[n].value);
    assert(left.length === 0, `cookies left after logout: ${left}`);
  });

  await step("signed out: fetch returns the 401; onUnauthenticated runs once per burst of requests", async () => {
    const r = await page.evaluate(async () => {
      let calls = 0;
      window.client.configure({ onUnauthenticated: () => (calls += 1) });
      const rs = await Promise.all([1, 2].map(() => window.client.fetch("/app/data")));
      const one = await window.client.fetch("/app/data");
      return { statuses: [...rs, one].map((x) => x.status), calls, url: location.href };
    });
    assert(r.statuses.join() === "401,401,401", `statuses ${r.statuses}`);
    // The two concurrent requests share one failed refresh (one call); the third is another.
    assert(r.calls === 2, `onUnauthenticated called ${r.calls} times`);
    assert(r.url === `${base}${pagePath}`, `the page moved to ${r.url}`);
  });

  await step("by default, signed out: fetch sends the browser to the sign-in page with next", async () => {
    await page.evaluate(() => {
      window.client.configure({ onUnauthenticated: null });
      window.client.fetch("/app/data");
    });
    await page.waitForURL((u) => u.pathname === "/api/auth/login");
    const next = new URL(page.url()).searchParams.get("next");
    assert(next === pagePath, `next is ${next} in ${page.url()}`);
  });

  await step("login(email, password) signs in again; me() and fetch work", async () => {
    await page.goto(`${base}${pagePath}`);
    await page.waitForSelector("body[data-ready=yes]");
    const r = await page.evaluate(
      async ([e, p]) => {
        const user = await window.client.login(e, p);
        const me = await window.client.me();
        const x = await window.client.fetch("/app/data");
        return { user, me, status: x.status };
      },
      [email, password],
    );
    assert(r.user.email === email && r.me.email === email, `login ${JSON.stringify(r.user)}, me ${JSON.stringify(r.me)}`);
    assert(r.status === 200, `fetch status ${r.status}`);
  });

  await step("no unexpected console errors or uncaught exceptions", async () => {
    assert(consoleErrors.length === 0, consoleErrors.join(" | "));
  });
}

run(main);
