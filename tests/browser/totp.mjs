// End-to-end check of the authenticator app (TOTP) on the hosted pages, in a real headless
// browser.
//
// Starts the gateway binary ($GATEWAY_BIN, default target/debug/gateway) on a free loopback port
// with a throwaway config and store (a route with `mfa: required`), and drives Debian's Chromium
// (/usr/bin/chromium, or $CHROMIUM_BIN) through playwright-core: sign up; the mfa route sends the
// browser to the two-factor page, where "Set up an authenticator app" shows a QR code and the
// key; the code for the current time step (computed here from the key shown, RFC 6238:
// HMAC-SHA1, 30 s, 6 digits) turns it on and the ten recovery codes are shown; sign out; sign in
// with the password: the second screen, a wrong code and the setup's own code refused there, the
// next step's code (the current one was used by the setup) lands on the page asked for with a
// two-factor session (amr, X-Auth-MFA: true upstream); a recovery code signs in once and is
// refused the second time; no console errors or CSP violations other than the refusals asked for.
//
//   npm ci --prefix tests/browser && cargo build && node tests/browser/totp.mjs
//
// Prints one line per check and a final `N passed, 0 failed`; exits 1 on the first failed check
// (the gateway's log is printed then). The gateway, the upstream and the browser are always
// stopped, and the whole run is bounded by $BROWSER_TEST_TIMEOUT_MS (default 60 s).

import { createHmac, randomBytes } from "node:crypto";
import {
  accessClaims,
  assert,
  cookieMap,
  launchChromium,
  run,
  signOut,
  startGateway,
  startUpstream,
  step,
  tempDir,
} from "./harness.mjs";

const PREFIX = "/api/auth";
const LOGIN = `${PREFIX}/login`;
const TWO_FACTOR = `${PREFIX}/two-factor`;
const ADMIN = "/admin/panel";
const ADMIN_TEXT = "admin panel for";
const STEP_SECS = 30;

/** RFC 4648 base32 (padding and spaces ignored). */
function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let acc = 0;
  const out = [];
  for (const ch of text.replace(/[\s=]/g, "").toUpperCase()) {
    const v = alphabet.indexOf(ch);
    if (v < 0) throw new Error(`not base32: ${JSON.stringify(text)}`);
    acc = ((acc << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

/** RFC 6238 (HOTP of RFC 4226 over the time step): HMAC-SHA1, 6 digits. */
function totp(key, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const bin = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(bin % 1_000_000).padStart(6, "0");
}

const currentStep = () => Math.floor(Date.now() / 1000 / STEP_SECS);

/** A six-digit code that is none of the codes of the steps around now. */
function wrongCode(key) {
  const now = currentStep();
  const near = new Set([-2, -1, 0, 1, 2].map((d) => totp(key, now + d)));
  for (let n = 0; ; n += 1) {
    const code = String((123456 + n * 111111) % 1_000_000).padStart(6, "0");
    if (!near.has(code)) return code;
  }
}

async function main() {
  tempDir("gateway-totp-");
  // RFC 6238 appendix B (SHA1, 8 digits there: the last 6 are ours).
  await step("the TOTP code here matches RFC 6238's test vectors", async () => {
    const key = Buffer.from("12345678901234567890");
    const vectors = [
      [59, "94287082"],
      [1111111109, "07081804"],
      [1234567890, "89005924"],
      [2000000000, "69279037"],
    ];
    for (const [t, want] of vectors) {
      const got = totp(key, Math.floor(t / STEP_SECS));
      assert(got === want.slice(-6), `T=${t}: ${got}, want ${want.slice(-6)}`);
    }
    assert(base32Decode("GEZDGNBVGY3TQOJQ").toString() === "1234567890", "base32");
  });

  const seen = [];
  const upstreamPort = await startUpstream((req, res) => {
    seen.push({ path: new URL(req.url, "http://x").pathname, headers: req.headers });
    const title = req.url.startsWith("/admin") ? ADMIN_TEXT : "app page for";
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><html lang="en"><head><title>t</title></head><body><p>${title} ${req.headers["x-auth-email"]}</p></body></html>`);
  });
  const base = await step("gateway with an mfa: required route starts and answers /healthz", () =>
    startGateway(() => [
      "auth:",
      "  password:",
      "    memory_kib: 1024",
      "    iterations: 1",
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
    ]),
  );
  const { page } = await launchChromium({ viewport: { width: 800, height: 900 } });

  // Console errors: the refusals asked for (401 from login/mfa) are expected; anything else (a
  // CSP violation, a script error) fails the run.
  const consoleErrors = [];
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const at = new URL(m.location().url || base).pathname;
    if (at.endsWith("/favicon.ico")) return;
    if (/status of 401/.test(m.text()) && at === `${PREFIX}/login/mfa`) return;
    consoleErrors.push(`${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  const email = `alan.${randomBytes(4).toString("hex")}@example.com`;
  const password = `granite orchard ${randomBytes(6).toString("hex")}`;

  await step("sign-up on the hosted page lands on /app/start", async () => {
    await page.goto(`${base}/app/start`);
    assert(new URL(page.url()).pathname === LOGIN, `landed on ${page.url()}`);
    await page.getByRole("link", { name: "Sign up" }).click();
    await page.waitForURL((u) => u.pathname === `${PREFIX}/signup`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Create account" }).click();
    await page.waitForURL((u) => u.pathname === "/app/start");
    await page.getByText(`app page for ${email}`).waitFor();
  });

  await step("the mfa route sends the browser to the two-factor page, which offers the setup", async () => {
    await page.goto(`${base}${ADMIN}`);
    const url = new URL(page.url());
    assert(url.pathname === TWO_FACTOR && url.searchParams.get("next") === ADMIN, `landed on ${page.url()}`);
    await page.getByRole("button", { name: "Set up an authenticator app" }).waitFor();
    assert(!seen.some((r) => r.path.startsWith("/admin")), "the upstream saw an /admin request");
  });

  const key = await step("'Set up an authenticator app' shows a QR code and the key", async () => {
    await page.getByRole("button", { name: "Set up an authenticator app" }).click();
    await page.getByRole("heading", { name: "Set up an authenticator app" }).waitFor();
    assert((await page.locator(".qr svg").count()) === 1, "no QR code");
    const text = (await page.locator("p", { hasText: "Key:" }).locator("code").innerText()).trim();
    const key = base32Decode(text);
    assert(key.length >= 16, `a ${key.length}-byte key from ${JSON.stringify(text)}`);
    return key;
  });

  let usedStep = 0;
  const recoveryCodes = await step("the current code turns it on: 'Two-factor sign-in is on', 10 recovery codes", async () => {
    usedStep = currentStep();
    await page.getByLabel("The six-digit code the app shows").fill(totp(key, usedStep));
    await page.getByRole("button", { name: "Turn on" }).click();
    await page.getByRole("heading", { name: "Recovery codes" }).waitFor();
    const status = (await page.getByRole("status").innerText()).trim();
    assert(status.startsWith("Two-factor sign-in is on."), `the page says ${JSON.stringify(status)}`);
    const codes = (await page.locator("ul.codes li code").allInnerTexts()).map((c) => c.trim());
    assert(codes.length === 10 && new Set(codes).size === 10, `codes ${JSON.stringify(codes)}`);
    return codes;
  });

  await step("sign out", () => signOut(page, base));

  const passwordStep = async () => {
    await page.goto(`${base}${LOGIN}?next=${encodeURIComponent(ADMIN)}`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in", exact: true }).click();
    await page.getByRole("heading", { name: "Two-factor sign-in" }).waitFor();
    await page.getByLabel("Code from your authenticator app").waitFor();
    const c = await cookieMap();
    assert(!(c.gw_access && c.gw_access.value), "a session cookie before the second step");
  };

  await step("sign-in with the password shows the second screen, no session yet", passwordStep);

  await step("a wrong code is refused there (401, 'Invalid code'), the second screen kept", async () => {
    const [resp] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === `${PREFIX}/login/mfa`),
      (async () => {
        await page.getByLabel("Code from your authenticator app").fill(wrongCode(key));
        await page.getByRole("button", { name: "Sign in", exact: true }).click();
      })(),
    ]);
    assert(resp.status() === 401, `status ${resp.status()}`);
    await page.waitForLoadState("load");
    const alert = (await page.getByRole("alert").innerText()).trim();
    assert(/invalid code/i.test(alert), `the alert says ${JSON.stringify(alert)}`);
    await page.getByLabel("Code from your authenticator app").waitFor();
  });

  await step("the code the setup used is refused there too (a code works once)", async () => {
    const [resp] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === `${PREFIX}/login/mfa`),
      (async () => {
        await page.getByLabel("Code from your authenticator app").fill(totp(key, usedStep));
        await page.getByRole("button", { name: "Sign in", exact: true }).click();
      })(),
    ]);
    assert(resp.status() === 401, `status ${resp.status()}`);
    await page.waitForLoadState("load");
    await page.getByLabel("Code from your authenticator app").waitFor();
  });

  await step("the next time step's code lands on next (the mfa route)", async () => {
    // The setup used `usedStep`; a code is accepted once, and one step either side of now.
    const now = currentStep();
    assert(now - usedStep <= 2, `the setup was ${now - usedStep} steps ago`);
    await page.getByLabel("Code from your authenticator app").fill(totp(key, usedStep + 1));
    await page.getByRole("button", { name: "Sign in", exact: true }).click();
    await page.waitForURL((u) => u.pathname === ADMIN);
    await page.getByText(`${ADMIN_TEXT} ${email}`).waitFor();
  });

  await step("the session's amr is pwd + otp + mfa; the upstream sees x-auth-mfa: true", async () => {
    const { amr } = await accessClaims();
    assert(amr.includes("pwd") && amr.includes("otp") && amr.includes("mfa"), `amr ${JSON.stringify(amr)}`);
    const hit = seen.filter((r) => r.path === ADMIN).pop();
    assert(hit && hit.headers["x-auth-mfa"] === "true", `x-auth-mfa ${hit && hit.headers["x-auth-mfa"]}`);
  });

  // A recovery code: once.
  await step("sign out", () => signOut(page, base));
  await step("sign-in with the password shows the second screen again", passwordStep);

  await step("a recovery code there lands on next with a two-factor session", async () => {
    await page.getByLabel("Code from your authenticator app").fill(recoveryCodes[3]);
    await page.getByRole("button", { name: "Sign in", exact: true }).click();
    await page.waitForURL((u) => u.pathname === ADMIN);
    await page.getByText(`${ADMIN_TEXT} ${email}`).waitFor();
    const { amr } = await accessClaims();
    assert(amr.includes("pwd") && amr.includes("mfa"), `amr ${JSON.stringify(amr)}`);
  });

  await step("the two-factor page says 9 unused recovery codes are left", async () => {
    await page.goto(`${base}${TWO_FACTOR}`);
    await page.getByText("9 unused recovery codes left.").waitFor();
  });

  await step("sign out", () => signOut(page, base));
  await step("sign-in with the password shows the second screen again", passwordStep);

  await step("the same recovery code is refused the second time (401, role=alert)", async () => {
    const [resp] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === `${PREFIX}/login/mfa`),
      (async () => {
        await page.getByLabel("Code from your authenticator app").fill(recoveryCodes[3]);
        await page.getByRole("button", { name: "Sign in", exact: true }).click();
      })(),
    ]);
    assert(resp.status() === 401, `status ${resp.status()}`);
    await page.waitForLoadState("load");
    const alert = (await page.getByRole("alert").innerText()).trim();
    assert(/invalid code/i.test(alert), `the alert says ${JSON.stringify(alert)}`);
    assert(new URL(page.url()).pathname !== ADMIN, `landed on ${page.url()}`);
    const c = await cookieMap();
    assert(!(c.gw_access && c.gw_access.value), "a session cookie was set");
  });

  await step("no console errors or CSP violations in any page", async () => {
    assert(consoleErrors.length === 0, consoleErrors.join(" | "));
  });
}

run(main);
