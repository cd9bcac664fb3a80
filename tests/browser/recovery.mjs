// End-to-end check of password reset by e-mail in a real headless browser.
//
// Starts the SMTP sink (tests/smtp/sink.py, Python's aiosmtpd) on a port of its own, the gateway
// binary ($GATEWAY_BIN, default target/debug/gateway) on a free loopback port with a throwaway
// config and store whose `email:` section delivers to the sink (public_url = the gateway's own
// base URL), and drives Debian's Chromium (/usr/bin/chromium, or $CHROMIUM_BIN) through
// playwright-core: sign up on the hosted page; 'Forgot password?' on the sign-in page (keeping
// `next` there and back), the neutral answer; the mail (addressed to the user, the link under
// public_url, in both parts); the page behind the link (headers, the account it is for, a weak
// password refused without using the link), a new password set by the form and the sign-in page
// saying so; the session from before the reset ended, its cookies deleted on the way to the
// sign-in page; the old password refused and the new one reaching a protected upstream page; the
// link refused when opened again; an unknown address answered with the same page and no mail; no
// console errors or CSP violations in any page.
//
//   npm ci --prefix tests/browser && cargo build && node tests/browser/recovery.mjs
//
// Prints one line per check and a final `N passed, 0 failed`; exits 1 on the first failed check
// (the gateway's log is printed then). The gateway, the sink, the upstream and the browser are
// always stopped, and the whole run is bounded by $BROWSER_TEST_TIMEOUT_MS (default 60 s).

import { randomBytes } from "node:crypto";
import path from "node:path";
import {
  assert,
  launchChromium,
  mailFiles,
  run,
  sleep,
  startGateway,
  startSink,
  startUpstream,
  step,
  tempDir,
  waitForMail,
} from "./harness.mjs";

// How long to wait for a mail that must not come.
const NO_MAIL_WAIT_MS = 1_500;
// The display name of `email.from`: the {{app}} of the mail templates.
const APP = "Recovery Test";

/** A plain app behind the gateway (no auth code of its own): /app/one. Returns its port. */
function startRecoveryUpstream() {
  return startUpstream((req, res) => {
    if (new URL(req.url, "http://x").pathname !== "/app/one") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(
      '<!doctype html><html lang="en"><head><title>Page one</title></head><body>' +
        "<h1>Page one</h1><p>secret of page one</p></body></html>",
    );
  });
}

async function startRecoveryGateway(smtpPort) {
  const upstreamPort = await startRecoveryUpstream();
  return startGateway((base) => [
    "auth:",
    "  password:",
    "    memory_kib: 1024",
    "    iterations: 1",
    "email:",
    `  smtp_url: smtp://127.0.0.1:${smtpPort}`,
    `  from: ${JSON.stringify(`${APP} <no-reply@recovery.test>`)}`,
    `  public_url: ${base}`,
    "  send_timeout: 5s",
    "  reset_ttl: 30m",
    "routes:",
    "  - name: pages",
    "    path: /app",
    `    upstream: http://127.0.0.1:${upstreamPort}`,
    "    auth: required",
    "  - name: home",
    "    path: /",
    "    upstream: builtin:whoami",
    "    auth: required",
  ]);
}

// Referrer policies that never send a page's path and query (a reset token) to another origin.
const PRIVATE_REFERRER = ["no-referrer", "same-origin", "origin", "strict-origin"];

/** The headers every hosted page carries, and the style the CSP must let through. */
async function checkPageHeaders(page, resp, privateReferrer) {
  const h = await resp.allHeaders();
  const csp = h["content-security-policy"] || "";
  assert(csp.includes("default-src 'none'"), `content-security-policy is ${JSON.stringify(csp)}`);
  assert(csp.includes("form-action 'self'"), `content-security-policy lacks form-action: ${csp}`);
  assert(h["x-frame-options"] === "DENY", `x-frame-options is ${JSON.stringify(h["x-frame-options"])}`);
  assert(h["cache-control"] === "no-store", `cache-control is ${JSON.stringify(h["cache-control"])}`);
  if (privateReferrer) {
    const rp = h["referrer-policy"];
    assert(PRIVATE_REFERRER.includes(rp), `referrer-policy is ${JSON.stringify(rp)}, not one of ${PRIVATE_REFERRER}`);
  }
  const bg = await page.evaluate(() => getComputedStyle(document.querySelector("main")).backgroundColor);
  assert(bg === "rgb(255, 255, 255)", `the page's inline style did not apply (main background ${bg})`);
}

/** What went wrong with a form post, for a failure message: the answer and the request's Origin. */
async function postDetail(page, resp) {
  const origin = (await resp.request().allHeaders()).origin;
  const body = (await page.locator("body").innerText().catch(() => "?")).trim().replace(/\s+/g, " ");
  return `status ${resp.status()} (request Origin: ${JSON.stringify(origin)}): ${JSON.stringify(body.slice(0, 200))}`;
}

/** Submits the form of the page with button `button`; returns the POST's response. */
async function submit(page, button, postPath) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === postPath),
    page.getByRole("button", { name: button }).click(),
  ]);
  await page.waitForLoadState("load");
  return resp;
}

async function main() {
  const tmp = tempDir("gateway-recovery-");
  const mailDir = path.join(tmp, "mail");
  const smtpPort = await step("SMTP sink (tests/smtp/sink.py) starts and prints its port", () => startSink(mailDir));
  const base = await step("gateway with email: starts and answers /healthz", () => startRecoveryGateway(smtpPort));
  const { context, page } = await launchChromium({ viewport: { width: 800, height: 640 } });
  const prefix = "/api/auth";
  const loginPath = `${prefix}/login`;
  const forgotPath = `${prefix}/forgot-password`;
  const resetPath = `${prefix}/reset-password`;

  // Anything the page logs as an error (CSP violations among them) fails the run at the end.
  // The expected errors are the status lines of the answers the test asks for: 401 for the old
  // password, 422 for a weak new one, 404 for a used link.
  const consoleErrors = [];
  const expectedErrors = [
    [401, loginPath],
    [422, resetPath],
    [404, resetPath],
  ];
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const at = new URL(m.location().url || base).pathname;
    const expected = expectedErrors.some(([s, p]) => m.text().includes(`status of ${s}`) && at === p);
    if (!expected) consoleErrors.push(`${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  const email = `grace.${randomBytes(4).toString("hex")}@example.com`;
  const oldPassword = `amber lighthouse ${randomBytes(6).toString("hex")}`;
  const newPassword = `copper meadow ${randomBytes(6).toString("hex")}`;

  // 1. An account, signed up on the hosted page. Its session is kept aside (not signed out) to
  // see the reset end it.
  const oldSession = await step("sign-up on the hosted page lands on /app/one", async () => {
    await page.goto(`${base}/app/one`);
    assert(new URL(page.url()).pathname === loginPath, `landed on ${page.url()}`);
    await page.getByRole("link", { name: "Sign up" }).click();
    await page.waitForURL((u) => u.pathname === `${prefix}/signup`);
    await page.getByLabel("Name").fill("Grace Hopper");
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(oldPassword);
    await page.getByRole("button", { name: "Create account" }).click();
    await page.waitForURL((u) => u.pathname === "/app/one");
    await page.getByText("secret of page one").waitFor();
    const cookies = await context.cookies();
    assert(cookies.some((c) => c.name === "gw_refresh"), `no gw_refresh cookie (have ${cookies.map((c) => c.name)})`);
    await context.clearCookies();
    return cookies;
  });

  // 2. Forgot password? from the sign-in page.
  await step("the sign-in page offers 'Forgot password?', leading to the forgot-password page", async () => {
    await page.goto(`${base}/app/one`);
    assert(new URL(page.url()).pathname === loginPath, `landed on ${page.url()} (still signed in?)`);
    await page.getByRole("link", { name: "Forgot password?" }).click();
    await page.waitForURL((u) => u.pathname === forgotPath);
    await page.getByRole("heading", { name: "Forgot your password?" }).waitFor();
  });

  await step("the forgot-password page keeps next=/app/one and 'Back to sign in' returns it", async () => {
    const next = new URL(page.url()).searchParams.get("next");
    assert(next === "/app/one", `next is ${next} in ${page.url()}`);
    await page.getByRole("link", { name: "Back to sign in" }).click();
    await page.waitForURL((u) => u.pathname === loginPath);
    const back = new URL(page.url()).searchParams.get("next");
    assert(back === "/app/one", `next is ${back} in ${page.url()}`);
  });

  await step("forgot-password page: CSP, X-Frame-Options, no-store, styled", async () => {
    const resp = await page.goto(`${base}${forgotPath}`);
    assert(resp.status() === 200, `status ${resp.status()}`);
    await checkPageHeaders(page, resp, false);
  });

  // When the forgot and reset pages are served with `Referrer-Policy: no-referrer`, Chromium
  // sends their form posts with `Origin: null` (as the Fetch standard says); the gateway must
  // still take them for the same-origin posts they are.
  const mailsBefore = mailFiles(mailDir).length;
  const sentAt = Date.now();
  const known = await step("submitting the address answers 202 with the neutral confirmation", async () => {
    await page.getByLabel("Email").fill(email.toUpperCase());
    const resp = await submit(page, "Send the link", forgotPath);
    assert(resp.status() === 202, await postDetail(page, resp));
    const status = page.getByRole("status");
    await status.waitFor();
    const text = (await status.innerText()).trim();
    assert(/^If an account exists for this address, .*on its way\.$/.test(text), `the page says ${JSON.stringify(text)}`);
    assert((await page.getByRole("alert").count()) === 0, "an error is shown");
    assert((await page.getByLabel("Email").count()) === 0, "the form is still shown");
    assert(!(await page.locator("body").innerText()).toLowerCase().includes(email), "the page repeats the address");
    const back = page.getByRole("link", { name: "Back to sign in" });
    assert((await back.getAttribute("href")) === loginPath, "no 'Back to sign in' link");
    return { status: resp.status(), text: (await page.locator("main").innerText()).trim() };
  });

  // 3. The mail.
  const mail = await step("one mail reaches the SMTP sink, addressed to the user", async () => {
    const m = await waitForMail(mailDir, mailsBefore);
    assert(JSON.stringify(m.rcpt_to) === JSON.stringify([email]), `rcpt_to is ${JSON.stringify(m.rcpt_to)}`);
    assert(m.to === email, `To: is ${JSON.stringify(m.to)}`);
    assert(m.mail_from === "no-reply@recovery.test", `MAIL FROM is ${JSON.stringify(m.mail_from)}`);
    assert(m.subject === `Reset your ${APP} password`, `subject is ${JSON.stringify(m.subject)}`);
    assert(m.text && m.html, `parts: text ${!!m.text}, html ${!!m.html}`);
    return m;
  });
  const mailMs = Date.now() - sentAt;

  const link = await step("the plain-text part has the reset link under public_url; the HTML part the same", async () => {
    const links = mail.text.match(/https?:\/\/\S+/g) || [];
    assert(links.length === 1, `links in the text part: ${JSON.stringify(links)}`);
    const url = new URL(links[0]);
    assert(url.origin === base, `the link points at ${url.origin}, not public_url ${base}`);
    assert(url.pathname === resetPath, `the link's path is ${url.pathname}`);
    const token = url.searchParams.get("token");
    assert(token && token.length >= 20, `token ${JSON.stringify(token)}`);
    assert([...url.searchParams.keys()].join() === "token", `query is ${url.search}`);
    assert(mail.html.includes(`href="${links[0]}"`), "the HTML part does not link to the same URL");
    assert(mail.text.includes(email), "the mail does not name the account");
    return links[0];
  });

  // 4. The page behind the link.
  await step("the link opens 'Choose a new password' for the account, without caching or Referer", async () => {
    const resp = await page.goto(link);
    assert(resp.status() === 200, `status ${resp.status()}`);
    await page.getByRole("heading", { name: "Choose a new password" }).waitFor();
    await page.getByText(`For ${email}.`).waitFor();
    await checkPageHeaders(page, resp, true);
    const pw = page.getByLabel("New password");
    assert((await pw.getAttribute("type")) === "password", "the new password field is not type=password");
    assert((await pw.getAttribute("autocomplete")) === "new-password", "no autocomplete=new-password");
  });

  await step("a weak password is refused in the page (422, role=alert), the link still usable", async () => {
    await page.getByLabel("New password").fill("short");
    const resp = await submit(page, "Set the password", resetPath);
    assert(resp.status() === 422, await postDetail(page, resp));
    const alert = (await page.getByRole("alert").innerText()).trim();
    assert(alert.length > 0 && !/invalid or has expired/i.test(alert), `the alert says ${JSON.stringify(alert)}`);
    await page.getByText(`For ${email}.`).waitFor();
    assert((await page.getByLabel("New password").inputValue()) === "", "the password was echoed back");
  });

  await step("the session from before the reset still opens /app/one (checked outside the browser)", async () => {
    const cookie = oldSession
      .filter((c) => ["gw_access", "gw_refresh"].includes(c.name))
      .map((c) => `${c.name}=${c.value}`)
      .join("; ");
    const r = await fetch(`${base}/app/one`, { headers: { cookie, accept: "text/html" }, redirect: "manual" });
    assert(r.status === 200, `status ${r.status}`);
    assert((await r.text()).includes("secret of page one"), "not the upstream page");
  });

  await step("a good new password is accepted and leads to the sign-in page", async () => {
    await page.getByLabel("New password").fill(newPassword);
    const resp = await submit(page, "Set the password", resetPath);
    assert(resp.status() === 303, await postDetail(page, resp));
    await page.waitForURL((u) => u.pathname === loginPath);
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    assert((await page.getByRole("alert").count()) === 0, `an error is shown: ${await page.locator("main").innerText()}`);
  });

  await step("the sign-in page says the password has been changed (role=status)", async () => {
    const status = (await page.getByRole("status").innerText()).trim();
    const want = "Your password has been changed. Sign in with the new one.";
    assert(status === want, `the page says ${JSON.stringify(status)}`);
  });

  // 5. The reset ended every session; the old password is gone, the new one works.
  await step("the session from before the reset is ended: its cookies lead to the sign-in page", async () => {
    await context.addCookies(oldSession);
    await page.goto(`${base}/app/one`);
    const url = new URL(page.url());
    assert(url.pathname === loginPath, `the old session still works: landed on ${page.url()}`);
    assert(url.searchParams.get("next") === "/app/one", `next is ${url.searchParams.get("next")}`);
    assert(!(await page.locator("body").innerText()).includes("secret of page one"), "the upstream page is shown");
  });

  await step("the redirect to sign-in deleted the ended session's cookies", async () => {
    const left = (await context.cookies()).filter((c) => c.name.startsWith("gw_")).map((c) => c.name);
    assert(left.length === 0, `cookies left: ${left}`);
  });

  await step("the old password is refused (401, role=alert)", async () => {
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(oldPassword);
    const resp = await submit(page, "Sign in", loginPath);
    assert(resp.status() === 401, await postDetail(page, resp));
    const alert = (await page.getByRole("alert").innerText()).trim();
    assert(alert.length > 0 && !/something went wrong/i.test(alert), `the alert says ${JSON.stringify(alert)}`);
    assert(new URL(page.url()).pathname === loginPath, `landed on ${page.url()}`);
    const c = await context.cookies();
    const old = Object.fromEntries(oldSession.map((x) => [x.name, x.value]));
    const fresh = c.filter((x) => x.name.startsWith("gw_") && x.value && x.value !== old[x.name]);
    assert(fresh.length === 0, `a failed login set cookies: ${fresh.map((x) => x.name)}; all: ${c.map((x) => `${x.name}${x.value === old[x.name] ? "(old)" : ""}`)}`);
  });

  await step("the new password signs in and reaches the protected upstream page /app/one", async () => {
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(newPassword);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL((u) => u.pathname === "/app/one");
    await page.getByText("secret of page one").waitFor();
  });

  // 6. Single use.
  await step("the same link opened again: 404 'This link is invalid or has expired', no form", async () => {
    const resp = await page.goto(link);
    assert(resp.status() === 404, `status ${resp.status()}`);
    const alert = (await page.getByRole("alert").innerText()).trim();
    assert(alert === "This link is invalid or has expired", `the alert says ${JSON.stringify(alert)}`);
    assert((await page.getByLabel("New password").count()) === 0, "the form is still offered");
    const again = page.getByRole("link", { name: "Ask for a new link" });
    assert((await again.getAttribute("href")) === forgotPath, "no 'Ask for a new link' link");
    await checkPageHeaders(page, resp, true);
  });

  // 7. An unknown address: the same answer, and no mail.
  const mailsNow = mailFiles(mailDir).length;
  await step("an unknown address gets the same status and page as a known one", async () => {
    await context.clearCookies();
    await page.goto(`${base}${forgotPath}`);
    await page.getByLabel("Email").fill(`nobody.${randomBytes(4).toString("hex")}@example.com`);
    const resp = await submit(page, "Send the link", forgotPath);
    const text = (await page.locator("main").innerText()).trim();
    assert(resp.status() === known.status, `${await postDetail(page, resp)}; ${known.status} for a known address`);
    assert(text === known.text, `the page says ${JSON.stringify(text)}, for a known address ${JSON.stringify(known.text)}`);
  });

  const quiet = Math.max(NO_MAIL_WAIT_MS, 3 * mailMs);
  await step(`no mail for the unknown address (${quiet} ms after; the real one took ${mailMs} ms)`, async () => {
    await sleep(quiet);
    const files = mailFiles(mailDir);
    assert(files.length === mailsNow, `${files.length - mailsNow} new message(s): ${files.slice(mailsNow)}`);
    assert(mailsNow === mailsBefore + 1, `${mailsNow - mailsBefore} messages for one request`);
  });

  await step("no console errors or CSP violations in any page", async () => {
    assert(consoleErrors.length === 0, consoleErrors.join(" | "));
  });
}

run(main);
