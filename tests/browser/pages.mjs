// End-to-end check of the hosted sign-in / sign-up / sign-out pages in a real headless browser.
//
// Starts the gateway binary ($GATEWAY_BIN, default target/debug/gateway) on a free loopback port
// with a throwaway config and store, then drives Debian's Chromium (/usr/bin/chromium, or
// $CHROMIUM_BIN) through playwright-core: redirect to login, sign up, silent refresh after the
// access cookie is gone, sign out (a revoked session's cookies deleted), wrong password, security
// headers, no CSP violations; Back after sign-out does not show protected pages from the browser's
// cache (an upstream without cache headers); the 403 page of a route offers another account.
//
//   npm ci --prefix tests/browser && cargo build && node tests/browser/pages.mjs
//
// Prints one line per check and a final `N passed, 0 failed`; exits 1 on the first failed check
// (the gateway's log is printed then). The gateway and the browser are always stopped, and the
// whole run is bounded by $BROWSER_TEST_TIMEOUT_MS (default 60 s). A screenshot of the login page
// goes to $SCREENSHOT (default /tmp/gateway-login.png), one of the 403 page to $SCREENSHOT_403
// (default /tmp/gateway-403.png).

import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { assert, cookieMap, launchChromium, run, startGateway, startUpstream, step, tempDir } from "./harness.mjs";

const SCREENSHOT = process.env.SCREENSHOT || path.join(os.tmpdir(), "gateway-login.png");
const SCREENSHOT_403 = process.env.SCREENSHOT_403 || path.join(os.tmpdir(), "gateway-403.png");

/**
 * An app with no auth code and no cache headers at all (what most apps behind the gateway look
 * like): /app/one and /app/two, linked to each other. Returns its port.
 */
function startPagesUpstream() {
  const pages = {
    "/app/one": ["Page one", "secret of page one", "/app/two", "Page two"],
    "/app/two": ["Page two", "secret of page two", "/app/one", "Page one"],
  };
  return startUpstream((req, res) => {
    const p = pages[new URL(req.url, "http://x").pathname];
    if (!p) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    const [title, secret, link, linkText] = p;
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(
      `<!doctype html><html lang="en"><head><title>${title}</title></head><body>` +
        `<h1>${title}</h1><p>${secret}</p><a href="${link}">${linkText}</a></body></html>`,
    );
  });
}

async function startPagesGateway() {
  const upstreamPort = await startPagesUpstream();
  return startGateway(() => [
    "auth:",
    "  password:",
    "    memory_kib: 1024",
    "    iterations: 1",
    "routes:",
    "  - name: public",
    "    path: /public",
    "    upstream: builtin:whoami",
    "    auth: public",
    "  - name: pages",
    "    path: /app",
    `    upstream: http://127.0.0.1:${upstreamPort}`,
    "    auth: required",
    "  - name: admin",
    "    path: /admin",
    "    upstream: builtin:whoami",
    "    auth: required",
    "    roles: [admin]",
    "  - name: app",
    "    path: /",
    "    upstream: builtin:whoami",
    "    auth: required",
  ]);
}

/** The text of the whoami table row for header `name`, or null. */
async function whoamiRow(page, name) {
  const row = page.locator("tr", { has: page.locator("th", { hasText: new RegExp(`^${name}$`) }) });
  if ((await row.count()) !== 1) return null;
  return (await row.locator("td").innerText()).trim();
}

async function main() {
  tempDir("gateway-browser-");
  const base = await step("gateway starts and answers /healthz", startPagesGateway);
  const { context, page } = await launchChromium({ viewport: { width: 800, height: 640 } });
  const loginPath = "/api/auth/login";

  // Anything the page logs as an error (CSP violations among them) fails the run at the end.
  const consoleErrors = [];
  // The expected errors are the 401 document the wrong password is answered with and the 403
  // page of /admin.
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const at = new URL(m.location().url || base).pathname;
    const expected401 = m.text().includes("status of 401") && at === loginPath;
    const expected403 = m.text().includes("status of 403") && at === "/admin";
    if (!expected401 && !expected403) consoleErrors.push(`${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  const email = `ada.${randomBytes(4).toString("hex")}@example.com`;
  const password = `violet harbour ${randomBytes(6).toString("hex")}`;

  // 1. A protected page sends the browser to the login page, remembering where it wanted to go.
  const loginResp = await step("/dashboard redirects to the login page with next=/dashboard", async () => {
    const resp = await page.goto(`${base}/dashboard`);
    const url = new URL(page.url());
    assert(url.pathname === loginPath, `landed on ${page.url()}`);
    assert(url.searchParams.get("next") === "/dashboard", `next is ${url.searchParams.get("next")} in ${page.url()}`);
    assert(resp.status() === 200, `status ${resp.status()}`);
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    return resp;
  });

  await step("login page has content-security-policy and x-frame-options: DENY", async () => {
    const h = await loginResp.allHeaders();
    const csp = h["content-security-policy"] || "";
    assert(csp.includes("default-src 'none'"), `content-security-policy is ${JSON.stringify(csp)}`);
    assert(csp.includes("form-action 'self'"), `content-security-policy lacks form-action: ${csp}`);
    assert(h["x-frame-options"] === "DENY", `x-frame-options is ${JSON.stringify(h["x-frame-options"])}`);
  });

  await step(`login page screenshot saved to ${SCREENSHOT}`, async () => {
    await page.getByLabel("Email").waitFor();
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    assert(fs.statSync(SCREENSHOT).size > 1000, "screenshot is empty");
  });

  // 2. Sign up through the link, filling the form by its labels.
  await step("'Sign up' link leads to the sign-up form, keeping next", async () => {
    await page.getByRole("link", { name: "Sign up" }).click();
    await page.waitForURL((u) => u.pathname === "/api/auth/signup");
    const url = new URL(page.url());
    assert(url.searchParams.get("next") === "/dashboard", `next is ${url.searchParams.get("next")}`);
    await page.getByRole("heading", { name: "Create an account" }).waitFor();
  });

  await step("sign-up by labels lands on /dashboard with x-auth-email", async () => {
    await page.getByLabel("Name").fill("Ada Lovelace");
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Create account" }).click();
    await page.waitForURL((u) => u.pathname === "/dashboard");
    await page.getByRole("heading", { name: "whoami" }).waitFor();
    const shown = await whoamiRow(page, "x-auth-email");
    assert(shown === email, `x-auth-email row is ${JSON.stringify(shown)}, expected ${email}`);
    const cookie = await whoamiRow(page, "cookie");
    assert(cookie === null || !/gw_(access|refresh|csrf)=/.test(cookie), `gateway cookies reached the upstream: ${cookie}`);
  });

  const before = await step("session cookies: gw_access, gw_refresh HttpOnly; gw_csrf readable; SameSite=Lax", async () => {
    const c = await cookieMap();
    for (const n of ["gw_access", "gw_refresh", "gw_csrf"]) assert(c[n], `no ${n} cookie (have ${Object.keys(c)})`);
    assert(c.gw_access.httpOnly && c.gw_refresh.httpOnly, "access/refresh cookies are not HttpOnly");
    assert(!c.gw_csrf.httpOnly, "gw_csrf is HttpOnly (scripts must read it)");
    for (const n of ["gw_access", "gw_refresh", "gw_csrf"]) {
      assert(c[n].sameSite === "Lax", `${n} SameSite=${c[n].sameSite}`);
      assert(c[n].path === "/", `${n} Path=${c[n].path}`);
    }
    return c;
  });

  // 3. The access cookie expires (the browser drops it); the refresh cookie silently renews it.
  await step("without gw_access, a reload silently refreshes and sets a fresh gw_access", async () => {
    await context.clearCookies({ name: "gw_access" });
    const c0 = await cookieMap();
    assert(!c0.gw_access && c0.gw_refresh && c0.gw_csrf, `cookies after deleting gw_access: ${Object.keys(c0)}`);
    const resp = await page.reload();
    assert(resp.status() === 200, `status ${resp.status()}`);
    assert(new URL(page.url()).pathname === "/dashboard", `landed on ${page.url()}`);
    await page.getByRole("heading", { name: "whoami" }).waitFor();
    const shown = await whoamiRow(page, "x-auth-email");
    assert(shown === email, `x-auth-email row is ${JSON.stringify(shown)}`);
    const c = await cookieMap();
    assert(c.gw_access && c.gw_access.value, "no fresh gw_access cookie");
    assert(c.gw_access.value !== before.gw_access.value, "gw_access was not renewed");
    assert(c.gw_refresh && c.gw_refresh.value !== before.gw_refresh.value, "gw_refresh was not rotated");
  });

  // 4. Sign out.
  await step("'Sign out' on /api/auth/logout lands on the login page and clears the cookies", async () => {
    await page.goto(`${base}/api/auth/logout`);
    await page.getByText(`Signed in as ${email}`).waitFor();
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL((u) => u.pathname === loginPath);
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    const c = await cookieMap();
    const left = ["gw_access", "gw_refresh", "gw_csrf"].filter((n) => c[n] && c[n].value);
    assert(left.length === 0, `cookies left after sign-out: ${left}`);
  });

  await step("after sign-out, /dashboard leads to the login page again", async () => {
    await page.goto(`${base}/dashboard`);
    const url = new URL(page.url());
    assert(url.pathname === loginPath, `landed on ${page.url()}`);
    assert(url.searchParams.get("next") === "/dashboard", `next is ${url.searchParams.get("next")}`);
  });

  // 5. A wrong password is reported in the page and the typed email is kept.
  await step("wrong password shows role=alert and keeps the email", async () => {
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill("not the right password");
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === loginPath),
      page.getByRole("button", { name: "Sign in" }).click(),
    ]);
    const alert = page.getByRole("alert");
    await alert.waitFor();
    const text = (await alert.innerText()).trim();
    assert(text.length > 0, "the alert is empty");
    assert(!/something went wrong/i.test(text), `unexpected error: ${text}`);
    assert(resp && resp.status() === 401, `status ${resp && resp.status()}`);
    assert((await page.getByLabel("Email").inputValue()) === email, "the email field was not kept");
    assert((await page.getByLabel("Password").inputValue()) === "", "the password was echoed back");
    const c = await cookieMap();
    assert(!c.gw_access, "a failed login set an access cookie");
  });

  await step("the right password then signs in and returns to /dashboard", async () => {
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL((u) => u.pathname === "/dashboard");
    const shown = await whoamiRow(page, "x-auth-email");
    assert(shown === email, `x-auth-email row is ${JSON.stringify(shown)}`);
  });

  // 6. Sign out when the access cookie has already expired: only the refresh cookie is left.
  await step("with only the refresh cookie left, /api/auth/logout still offers 'Sign out'", async () => {
    const c = await cookieMap();
    await context.clearCookies({ name: "gw_access" });
    await page.goto(`${base}/api/auth/logout`);
    await page.getByRole("button", { name: "Sign out" }).waitFor({ timeout: 3_000 }).catch(async () => {
      throw new Error(`no 'Sign out' button; the page says ${JSON.stringify(await page.locator("main").innerText())}`);
    });
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL((u) => u.pathname === loginPath);
    // The session is revoked on the server: the old refresh cookie, put back, signs nobody in.
    await context.addCookies([{ ...c.gw_refresh }, { ...c.gw_csrf }]);
    await page.goto(`${base}/dashboard`);
    assert(new URL(page.url()).pathname === loginPath, `the old refresh cookie still works: landed on ${page.url()}`);
  });

  await step("the redirect to sign-in deleted the dead session's cookies", async () => {
    const c = await cookieMap();
    const left = ["gw_access", "gw_refresh", "gw_csrf"].filter((n) => c[n]);
    assert(left.length === 0, `cookies left: ${left}`);
  });

  // 7. Back after sign-out: an upstream that sets no cache headers must not have its pages kept
  // by the browser (the gateway adds Cache-Control: private, no-store).
  await step("sign in, open two pages of an app without cache headers", async () => {
    await page.goto(`${base}/app/one`);
    assert(new URL(page.url()).pathname === loginPath, `landed on ${page.url()}`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL((u) => u.pathname === "/app/one");
    await page.getByText("secret of page one").waitFor();
    const [resp] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === "/app/two"),
      page.getByRole("link", { name: "Page two" }).click(),
    ]);
    await page.waitForURL((u) => u.pathname === "/app/two");
    await page.getByText("secret of page two").waitFor();
    const cc = (await resp.allHeaders())["cache-control"];
    assert(cc === "private, no-store", `cache-control of /app/two is ${JSON.stringify(cc)}`);
  });

  await step("signed out in another tab, Back shows the sign-in page, not the page from the cache", async () => {
    const other = await context.newPage();
    await other.goto(`${base}/api/auth/logout`);
    await other.getByRole("button", { name: "Sign out" }).click();
    await other.waitForURL((u) => u.pathname === loginPath);
    await other.close();
    await page.goBack();
    await page.waitForLoadState("load");
    const text = await page.locator("body").innerText();
    assert(!text.includes("secret of page one"), `Back showed the signed-in page at ${page.url()}: ${JSON.stringify(text)}`);
    const url = new URL(page.url());
    assert(url.pathname === loginPath, `Back landed on ${page.url()}`);
    assert(url.searchParams.get("next") === "/app/one", `next is ${url.searchParams.get("next")}`);
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
  });

  // 8. The 403 page: a signed-in user without the admin role.
  await step("a route the account lacks the role for shows the 403 page in the sign-in look", async () => {
    await page.goto(`${base}/admin`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    const [resp] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === "/admin"),
      page.getByRole("button", { name: "Sign in" }).click(),
    ]);
    assert(resp.status() === 403, `status ${resp.status()}`);
    await page.getByRole("heading", { name: "No access" }).waitFor();
    await page.getByText("does not have access to this page").waitFor();
    const viewport = await page.locator('meta[name="viewport"]').count();
    assert(viewport === 1, "no viewport meta");
    const bg = await page.evaluate(() => getComputedStyle(document.querySelector("main")).backgroundColor);
    assert(bg === "rgb(255, 255, 255)", `main is not styled like the sign-in page (background ${bg})`);
    assert((await page.getByRole("link", { name: /home page/ }).getAttribute("href")) === "/", "no link to /");
    await page.screenshot({ path: SCREENSHOT_403, fullPage: true });
    assert(fs.statSync(SCREENSHOT_403).size > 1000, "screenshot is empty");
  });

  await step("'Sign out / use another account' signs out and offers the sign-in page for /admin", async () => {
    await page.getByRole("button", { name: "Sign out / use another account" }).click();
    await page.waitForURL((u) => u.pathname === loginPath);
    const url = new URL(page.url());
    assert(url.searchParams.get("next") === "/admin", `next is ${url.searchParams.get("next")}`);
    const c = await cookieMap();
    const left = ["gw_access", "gw_refresh", "gw_csrf"].filter((n) => c[n] && c[n].value);
    assert(left.length === 0, `cookies left after sign-out: ${left}`);
  });

  await step("no console errors or CSP violations in any page", async () => {
    assert(consoleErrors.length === 0, consoleErrors.join(" | "));
  });
}

run(main);
