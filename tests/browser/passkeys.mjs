// End-to-end check of passkeys (WebAuthn) on the hosted pages, in a real headless browser with a
// virtual authenticator.
//
// Starts the gateway binary ($GATEWAY_BIN, default target/debug/gateway) on a free loopback port
// with a throwaway config and store (`auth.webauthn` with the origin http://localhost:PORT and
// `passwordless: true`, a route with `mfa: required`), and drives Debian's Chromium
// (/usr/bin/chromium, or $CHROMIUM_BIN) through playwright-core, with a CTAP2 platform
// authenticator (resident keys, user verification) added over the DevTools protocol. WebAuthn
// refuses IP addresses, so the browser uses http://localhost:PORT (a secure context), mapped to
// the gateway's 127.0.0.1 by --host-resolver-rules.
//
// Checks: sign up; "Add a passkey" on the two-factor page (the ten recovery codes shown, one
// resident credential in the authenticator, the passkey listed after a reload); the session that
// added it is still a password session, sent from the mfa route to the two-factor page, where
// "Use a passkey" steps it up and lands on the route (one click, one ceremony); sign-in with the
// password, then "Use a passkey" on the second screen (amr pwd + hwk|swk + mfa, the mfa route
// reached, X-Auth-MFA: true upstream); "Sign in with a passkey" without a password (amr without pwd); with the
// authenticator's user verification failing, a passkey sign-in refused by the browser, and an
// answer without user verification (the options rewritten on the way) refused by the gateway;
// the passkey removed on the two-factor page (password only: the session has a second factor),
// and a passkey sign-in with the credential left in the authenticator refused with a visible
// error; no console errors or CSP violations other than the refusals asked for.
//
//   npm ci --prefix tests/browser && cargo build && node tests/browser/passkeys.mjs
//
// Prints one line per check and a final `N passed, 0 failed`; exits 1 on the first failed check
// (the gateway's log is printed then). The gateway, the upstream and the browser are always
// stopped, and the whole run is bounded by $BROWSER_TEST_TIMEOUT_MS (default 60 s).

import { randomBytes } from "node:crypto";
import {
  CHROMIUM_ARGS,
  accessClaims,
  assert,
  cookieMap,
  launchChromium,
  run,
  signOut as signOutOf,
  startGateway,
  startUpstream,
  step,
  tempDir,
} from "./harness.mjs";

const PREFIX = "/api/auth";
const LOGIN = `${PREFIX}/login`;
const TWO_FACTOR = `${PREFIX}/two-factor`;
// The route that needs a second factor, and what it shows.
const ADMIN = "/admin/panel";
const ADMIN_TEXT = "admin panel for";

/**
 * The upstream behind both routes: /app/... and /admin/... answer a page naming the user, and
 * every request's headers are kept (`seen`). Returns its port.
 */
async function startPasskeyUpstream(seen) {
  return startUpstream((req, res) => {
    seen.push({ path: new URL(req.url, "http://x").pathname, headers: req.headers });
    const who = req.headers["x-auth-email"] || "?";
    const title = req.url.startsWith("/admin") ? ADMIN_TEXT : "app page for";
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><html lang="en"><head><title>t</title></head><body><p>${title} ${who}</p></body></html>`);
  });
}

function isKeyAmr(amr) {
  return amr.includes("hwk") || amr.includes("swk");
}

/** The text of the passkey error line, once shown. */
async function passkeyError(page) {
  const el = page.locator("#passkey-error");
  await el.waitFor({ state: "visible" });
  return (await el.innerText()).trim();
}

async function main() {
  tempDir("gateway-passkeys-");
  const seen = [];
  const upstreamPort = await startPasskeyUpstream(seen);
  let origin = "";
  await step("gateway with auth.webauthn (origin http://localhost:PORT, passwordless) starts", async () => {
    const base = await startGateway((b) => {
      origin = b.replace("127.0.0.1", "localhost");
      return [
        "auth:",
        "  password:",
        "    memory_kib: 1024",
        "    iterations: 1",
        "  webauthn:",
        `    origin: '${origin}'`,
        "    passwordless: true",
        // Some twenty sign-in calls from one address in a few seconds.
        "rate_limits:",
        "  login_per_ip: 'off'",
        "  login_per_account: 'off'",
        "routes:",
        "  - name: admin",
        "    path: /admin",
        `    upstream: http://127.0.0.1:${upstreamPort}`,
        "    auth: required",
        "    mfa: required",
        "  - name: app",
        "    path: /app",
        `    upstream: http://127.0.0.1:${upstreamPort}`,
        "    auth: required",
      ];
    });
    assert(origin.startsWith("http://localhost:"), `origin ${origin} from ${base}`);
  });
  const { context, page } = await launchChromium({
    viewport: { width: 800, height: 900 },
    // localhost, not the IP address (WebAuthn wants a domain), reaching the gateway on 127.0.0.1.
    args: [...CHROMIUM_ARGS, "--host-resolver-rules=MAP localhost 127.0.0.1"],
  });

  // Console errors: the failed fetches the test provokes are expected (their status lines, on
  // the endpoints concerned); anything else (a CSP violation, a script error) fails the run.
  const consoleErrors = [];
  let expectedErrors = [];
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    // No route serves /favicon.ico here.
    if ((m.location().url || "").endsWith("/favicon.ico")) return;
    const text = m.text();
    const at = new URL(m.location().url || origin).pathname;
    if (at === `${PREFIX}/passkey/finish` && expectedErrors.some((re) => re.test(text))) return;
    consoleErrors.push(`${text} (${m.location().url})`);
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  // The passkey calls the pages make, by path: one click is one ceremony.
  const posts = [];
  page.on("request", (r) => {
    if (r.method() === "POST") posts.push(new URL(r.url()).pathname);
  });
  const postsSince = (n) => posts.slice(n).join(" ");

  const cdp = await context.newCDPSession(page);
  const authenticatorId = await step("a CTAP2 virtual authenticator (resident keys, user verification) is added", async () => {
    await cdp.send("WebAuthn.enable");
    const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: {
        protocol: "ctap2",
        transport: "internal",
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    });
    assert(authenticatorId, "no authenticator id");
    return authenticatorId;
  });
  const credentials = async () => (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials;

  const email = `ada.${randomBytes(4).toString("hex")}@example.com`;
  const password = `velvet harbour ${randomBytes(6).toString("hex")}`;

  // 1. An account, and a passkey added on the two-factor page.
  await step("sign-up on the hosted page (at http://localhost) lands on /app/start", async () => {
    await page.goto(`${origin}/app/start`);
    assert(new URL(page.url()).pathname === LOGIN, `landed on ${page.url()}`);
    await page.getByRole("link", { name: "Sign up" }).click();
    await page.waitForURL((u) => u.pathname === `${PREFIX}/signup`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Create account" }).click();
    await page.waitForURL((u) => u.pathname === "/app/start");
    await page.getByText(`app page for ${email}`).waitFor();
    const claims = await accessClaims();
    assert(JSON.stringify(claims.amr) === '["pwd"]', `amr ${JSON.stringify(claims.amr)}`);
  });

  await step("the two-factor page offers 'Add a passkey' (shown by webauthn.js) and lists none", async () => {
    const resp = await page.goto(`${origin}${TWO_FACTOR}?next=${encodeURIComponent(ADMIN)}`);
    assert(resp.status() === 200, `status ${resp.status()}`);
    await page.getByRole("heading", { name: "Passkeys" }).waitFor();
    await page.getByRole("button", { name: "Add a passkey" }).waitFor({ state: "visible" });
    const removeButtons = await page.getByRole("button", { name: "Remove", exact: true }).count();
    assert(removeButtons === 0, `${removeButtons} passkeys listed`);
  });

  await step("'Add a passkey' with a name registers it (one ceremony) and shows 10 recovery codes", async () => {
    const n = posts.length;
    await page.getByLabel("Name for a new passkey").fill("Test laptop");
    const [resp] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === `${PREFIX}/mfa/webauthn/register/finish`),
      page.getByRole("button", { name: "Add a passkey" }).click(),
    ]);
    if (resp.status() !== 201) {
      const err = await page.locator("#passkey-error").innerText().catch(() => "");
      throw new Error(`register/finish answered ${resp.status()}: ${await resp.text()} (page: ${JSON.stringify(err)})`);
    }
    const box = page.locator("#passkey-codes");
    await box.waitFor({ state: "visible" });
    const codes = (await box.locator("li code").allInnerTexts()).map((c) => c.trim());
    assert(codes.length === 10, `${codes.length} codes: ${JSON.stringify(codes)}`);
    assert(new Set(codes).size === 10 && codes.every((c) => c.length >= 8), `codes ${JSON.stringify(codes)}`);
    assert(!(await page.locator("#passkey-error").isVisible()), "an error is shown");
    const want = `${PREFIX}/mfa/webauthn/register/start ${PREFIX}/mfa/webauthn/register/finish`;
    assert(postsSince(n) === want, `the click posted: ${postsSince(n)}`);
    return codes;
  });

  await step("the authenticator holds one resident credential for the RP id localhost", async () => {
    const list = await credentials();
    assert(list.length === 1, `${list.length} credentials`);
    assert(list[0].isResidentCredential === true, `isResidentCredential ${list[0].isResidentCredential}`);
    assert(list[0].rpId === "localhost", `rpId ${list[0].rpId}`);
    assert(list[0].userHandle, "no user handle");
  });

  await step("after a reload the page lists the passkey 'Test laptop' with a Remove form", async () => {
    await page.reload();
    const item = page.locator("ul.sessions li").filter({ hasText: "Test laptop" });
    await item.waitFor();
    assert((await page.locator("ul.sessions li").count()) === 1, "not exactly one passkey listed");
    await item.getByRole("button", { name: "Remove" }).waitFor();
    const status = await (await page.request.get(`${origin}${PREFIX}/mfa`)).json();
    assert(status.passkeys === 1 && status.recovery_codes_left === 10, `GET /mfa: ${JSON.stringify(status)}`);
  });

  // 2. Step-up: the session that added the passkey signed in with the password alone.
  await step("the session that added it is still password-only: the mfa route sends it to the two-factor page", async () => {
    const claims = await accessClaims();
    assert(JSON.stringify(claims.amr) === '["pwd"]', `amr ${JSON.stringify(claims.amr)}`);
    const before = seen.length;
    await page.goto(`${origin}${ADMIN}`);
    const url = new URL(page.url());
    assert(url.pathname === TWO_FACTOR && url.searchParams.get("next") === ADMIN, `landed on ${page.url()}`);
    assert(seen.slice(before).every((r) => !r.path.startsWith("/admin")), "the upstream saw an /admin request");
    await page.getByRole("button", { name: "Use a passkey" }).waitFor({ state: "visible" });
  });

  await step("'Use a passkey' there steps up once (amr pwd + hwk|swk + mfa) and lands on the mfa route", async () => {
    const before = seen.length;
    const n = posts.length;
    await page.getByRole("button", { name: "Use a passkey" }).click();
    await page.waitForURL((u) => u.pathname === ADMIN).catch(async (e) => {
      const err = await page.locator("#passkey-error").innerText().catch(() => "");
      throw new Error(`${e.message.split("\n")[0]} (page: ${page.url()}, error: ${JSON.stringify(err)})`);
    });
    await page.getByText(`${ADMIN_TEXT} ${email}`).waitFor();
    const { amr } = await accessClaims();
    assert(amr.includes("pwd") && amr.includes("mfa") && isKeyAmr(amr), `amr ${JSON.stringify(amr)}`);
    const hit = seen.slice(before).find((r) => r.path === ADMIN);
    assert(hit && hit.headers["x-auth-mfa"] === "true", `x-auth-mfa ${hit && hit.headers["x-auth-mfa"]}`);
    const want = `${PREFIX}/mfa/webauthn/challenge ${PREFIX}/mfa/verify`;
    assert(postsSince(n) === want, `one click posted: ${postsSince(n)}`);
  });

  const signOut = () => signOutOf(page, origin);

  // 3. Password, then the passkey as the second step.
  await step("sign out", signOut);

  await step("sign-in with email and password shows the second screen, with 'Use a passkey'", async () => {
    await page.goto(`${origin}${LOGIN}?next=${encodeURIComponent(ADMIN)}`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in", exact: true }).click();
    await page.getByRole("heading", { name: "Two-factor sign-in" }).waitFor();
    await page.getByLabel("Code from your authenticator app").waitFor();
    await page.getByRole("button", { name: "Use a passkey" }).waitFor({ state: "visible" });
    const c = await cookieMap();
    assert(!(c.gw_access && c.gw_access.value), "a session cookie before the second step");
  });

  await step("'Use a passkey' finishes the sign-in and lands on next (the mfa route)", async () => {
    const before = seen.length;
    await page.getByRole("button", { name: "Use a passkey" }).click();
    await page.waitForURL((u) => u.pathname === ADMIN).catch(async (e) => {
      const err = await page.locator("#passkey-error").innerText().catch(() => "");
      throw new Error(`${e.message.split("\n")[0]} (page: ${page.url()}, error: ${JSON.stringify(err)})`);
    });
    await page.getByText(`${ADMIN_TEXT} ${email}`).waitFor();
    const hit = seen.slice(before).find((r) => r.path === ADMIN);
    assert(hit, "the upstream saw no /admin request");
  });

  await step("the session's access token has amr pwd + hwk|swk + mfa", async () => {
    const { amr } = await accessClaims();
    assert(amr.includes("pwd") && amr.includes("mfa") && isKeyAmr(amr), `amr ${JSON.stringify(amr)}`);
  });

  await step("the mfa route answers 200 and the upstream sees x-auth-mfa: true", async () => {
    const before = seen.length;
    const resp = await page.goto(`${origin}${ADMIN}`);
    assert(resp.status() === 200, `status ${resp.status()}`);
    const hit = seen.slice(before).find((r) => r.path === ADMIN);
    assert(hit && hit.headers["x-auth-mfa"] === "true", `x-auth-mfa ${hit && hit.headers["x-auth-mfa"]}`);
  });

  // 4. A refused user verification: by the browser, then by the gateway.
  await step("sign out", signOut);

  await step("user verification failing: 'Sign in with a passkey' is refused (error shown, no session)", async () => {
    await cdp.send("WebAuthn.setUserVerified", { authenticatorId, isUserVerified: false });
    await page.goto(`${origin}${LOGIN}?next=${encodeURIComponent(ADMIN)}`);
    const button = page.getByRole("button", { name: "Sign in with a passkey" });
    await button.waitFor({ state: "visible" });
    const n = posts.length;
    await button.click();
    const err = await passkeyError(page);
    // The gateway asks for user verification, so the browser itself gives up (NotAllowedError)
    // and nothing is sent to finish.
    assert(/NotAllowed|not allowed|timed out/i.test(err), `the error says ${JSON.stringify(err)}`);
    assert(postsSince(n) === `${PREFIX}/passkey/start`, `posted: ${postsSince(n)}`);
    assert(new URL(page.url()).pathname === LOGIN, `landed on ${page.url()}`);
    const c = await cookieMap();
    assert(!(c.gw_access && c.gw_access.value), "a session cookie was set");
    return err;
  });

  await step("an answer without user verification (options rewritten to 'discouraged') is refused by the gateway", async () => {
    // The gateway asks for user verification; a client that does not ask the authenticator for
    // it gets an answer with the UV flag off, which the gateway must refuse itself.
    const startPath = `${PREFIX}/passkey/start`;
    await page.route(`**${startPath}`, async (route) => {
      const resp = await route.fetch();
      const body = await resp.json();
      body.publicKey.userVerification = "discouraged";
      await route.fulfill({ response: resp, json: body });
    });
    expectedErrors = [/status of 403/];
    try {
      await page.reload();
      const [finish] = await Promise.all([
        page.waitForResponse((r) => new URL(r.url()).pathname === `${PREFIX}/passkey/finish`),
        page.getByRole("button", { name: "Sign in with a passkey" }).click(),
      ]);
      const status = finish.status();
      assert(status === 403, `passkey/finish answered ${status}: ${await finish.text()}`);
      const err = await passkeyError(page);
      assert(err === "The passkey was not accepted", `the error says ${JSON.stringify(err)}`);
      const c = await cookieMap();
      assert(!(c.gw_access && c.gw_access.value), "a session cookie was set");
      return `${status} ${err}`;
    } finally {
      await page.unroute(`**${startPath}`);
      await cdp.send("WebAuthn.setUserVerified", { authenticatorId, isUserVerified: true });
    }
  });

  // 5. Without a password.
  await step("'Sign in with a passkey' signs in without a password and lands on next", async () => {
    await page.reload();
    await page.getByRole("button", { name: "Sign in with a passkey" }).click();
    await page.waitForURL((u) => u.pathname === ADMIN).catch(async (e) => {
      const err = await page.locator("#passkey-error").innerText().catch(() => "");
      throw new Error(`${e.message.split("\n")[0]} (page: ${page.url()}, error: ${JSON.stringify(err)})`);
    });
    await page.getByText(`${ADMIN_TEXT} ${email}`).waitFor();
  });

  await step("that session's amr is hwk|swk + mfa, without pwd", async () => {
    const claims = await accessClaims();
    const { amr } = claims;
    assert(!amr.includes("pwd") && amr.includes("mfa") && isKeyAmr(amr), `amr ${JSON.stringify(amr)}`);
  });

  // 6. Removing the passkey.
  await step("the two-factor page says the session has a second factor; the Remove form asks no code", async () => {
    await page.goto(`${origin}${TWO_FACTOR}`);
    await page.getByText("This session is signed in with your second factor.").waitFor();
    const item = page.locator("ul.sessions li").filter({ hasText: "Test laptop" });
    assert((await item.locator('input[name="code"]').count()) === 0, "the Remove form asks for a code");
    assert(/last used/.test(await item.innerText()), `no last use shown: ${await item.innerText()}`);
  });

  await step("Remove with the password: 'The passkey was removed.', the list empty", async () => {
    const item = page.locator("ul.sessions li").filter({ hasText: "Test laptop" });
    await item.getByLabel("Password").fill(password);
    await item.getByRole("button", { name: "Remove" }).click();
    await page.getByText("The passkey was removed.").waitFor();
    assert((await page.locator("ul.sessions li").count()) === 0, "passkeys still listed");
    const status = await (await page.request.get(`${origin}${PREFIX}/mfa`)).json();
    assert(status.passkeys === 0 && status.recovery_codes_left === 0, `GET /mfa: ${JSON.stringify(status)}`);
    assert((await page.request.get(`${origin}${PREFIX}/mfa/webauthn`).then((r) => r.json())).passkeys.length === 0, "listed by the API");
  });

  await step("sign out", signOut);

  await step("a passkey sign-in with the removed credential is refused: #passkey-error shown, no session", async () => {
    assert((await credentials()).length === 1, "the authenticator lost the credential");
    expectedErrors = [/status of 403/];
    await page.goto(`${origin}${LOGIN}?next=${encodeURIComponent(ADMIN)}`);
    const [finish] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === `${PREFIX}/passkey/finish`),
      page.getByRole("button", { name: "Sign in with a passkey" }).click(),
    ]);
    assert(finish.status() === 403, `passkey/finish answered ${finish.status()}`);
    const err = await passkeyError(page);
    assert(err === "The passkey was not accepted", `the error says ${JSON.stringify(err)}`);
    assert(new URL(page.url()).pathname === LOGIN, `landed on ${page.url()}`);
    const c = await cookieMap();
    assert(!(c.gw_access && c.gw_access.value), "a session cookie was set");
  });

  await step("the password alone signs in again (no factor left: no second screen)", async () => {
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in", exact: true }).click();
    await page.waitForURL((u) => u.pathname === TWO_FACTOR || u.pathname === ADMIN);
    // The mfa route now sends a password session to set a factor up.
    assert(new URL(page.url()).pathname === TWO_FACTOR, `landed on ${page.url()}`);
    const { amr } = await accessClaims();
    assert(JSON.stringify(amr) === '["pwd"]', `amr ${JSON.stringify(amr)}`);
  });

  await step("no console errors or CSP violations in any page", async () => {
    assert(consoleErrors.length === 0, consoleErrors.join(" | "));
  });
}

run(main);
