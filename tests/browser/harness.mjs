// What the browser checks (pages.mjs, client.mjs, recovery.mjs) share: numbered checks, the
// gateway binary started on a free loopback port with a throwaway config and store, upstreams
// as small Node HTTP servers, the SMTP sink (tests/smtp/sink.py, Python's aiosmtpd), Debian's
// Chromium through playwright-core, and the run itself (an overall timeout, cleanup, the
// summary line, the gateway's log on failure).
//
// A script calls `run(main)`; `main` starts what it needs through this module, which stops it
// all when the run ends, passed or failed. Environment: $GATEWAY_BIN (default
// target/debug/gateway), $CHROMIUM_BIN (default /usr/bin/chromium), $BROWSER_TEST_TIMEOUT_MS
// (default 60 s for the whole run).
//
// Output: `ok N - name` per check, then `(T s)` and `N passed, 0 failed`; on the first failed
// check `FAILED: ...`, the last lines of the gateway's (and the sink's) log, `N passed, 1
// failed`, and exit status 1.

import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, "..", "..");
export const GATEWAY_BIN = path.resolve(repo, process.env.GATEWAY_BIN || "target/debug/gateway");
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const SINK = path.join(repo, "tests", "smtp", "sink.py");
const OVERALL_TIMEOUT_MS = Number(process.env.BROWSER_TEST_TIMEOUT_MS || 60_000);
export const STEP_TIMEOUT_MS = 10_000;
const MAIL_TIMEOUT_MS = 10_000;

const started = Date.now();
let passed = 0;
let finished = false;
// What the run started, stopped by cleanup().
let gateway = null;
let sink = null;
let servers = [];
let context = null;
let tmp = null;
let gatewayLog = "";
let sinkLog = "";

// ---- checks ----

class CheckFailed extends Error {}

export function check(name, ok, detail = "") {
  if (!ok) {
    throw new CheckFailed(`${name}${detail ? `: ${detail}` : ""}`);
  }
  passed += 1;
  console.log(`ok ${passed} - ${name}`);
}

/** Runs `body` as one named check: any exception inside fails it with that name. */
export async function step(name, body) {
  try {
    const detail = await body();
    check(name, true);
    return detail;
  } catch (e) {
    if (e instanceof CheckFailed) throw e;
    throw new CheckFailed(`${name}: ${e && e.message ? e.message.split("\n")[0] : e}`);
  }
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the run ----

/**
 * Runs `main` as the whole check run: bounded by $BROWSER_TEST_TIMEOUT_MS, stopped by SIGINT and
 * SIGTERM, everything it started stopped at the end, and the summary printed.
 */
export function run(main) {
  setTimeout(() => {
    fail(`overall timeout of ${OVERALL_TIMEOUT_MS / 1000} s exceeded`);
  }, OVERALL_TIMEOUT_MS);
  for (const sig of ["SIGINT", "SIGTERM"]) {
    process.on(sig, () => fail(`interrupted by ${sig}`));
  }
  main()
    .then(async () => {
      await cleanup();
      finished = true;
      console.log(`(${((Date.now() - started) / 1000).toFixed(1)} s)`);
      console.log(`${passed} passed, 0 failed`);
    })
    .then(
      () => process.exit(0),
      (e) => fail(e instanceof CheckFailed ? e.message : (e && e.stack) || String(e)),
    );
}

async function fail(message) {
  if (finished) return;
  finished = true;
  console.error(`\nFAILED: ${message}`);
  if (gatewayLog.trim()) {
    console.error("--- gateway log (last 60 lines) ---");
    console.error(gatewayLog.trimEnd().split("\n").slice(-60).join("\n"));
  }
  if (sinkLog.trim()) {
    console.error("--- SMTP sink log ---");
    console.error(sinkLog.trimEnd().split("\n").slice(-20).join("\n"));
  }
  await cleanup();
  console.log(`${passed} passed, 1 failed`);
  process.exit(1);
}

/** Stops a child process: SIGTERM, then SIGKILL if it is still there after 3 s. */
async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const exited = await Promise.race([
    new Promise((r) => child.once("exit", () => r(true))),
    sleep(3_000).then(() => false),
  ]);
  if (!exited) child.kill("SIGKILL");
}

async function cleanup() {
  if (context) {
    const c = context;
    context = null;
    await Promise.race([c.close().catch(() => {}), sleep(5_000)]);
  }
  const g = gateway;
  const s = sink;
  gateway = null;
  sink = null;
  await Promise.all([stop(g), stop(s)]);
  const open = servers;
  servers = [];
  for (const server of open) {
    server.closeAllConnections();
    await new Promise((r) => server.close(() => r()));
  }
  if (tmp) {
    fs.rmSync(tmp, { recursive: true, force: true });
    tmp = null;
  }
}

/** A fresh temporary directory for the run (removed at the end), named `prefix...`. */
export function tempDir(prefix) {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return tmp;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---- upstreams ----

/** A Node HTTP server on a free loopback port, answering with `handler`; returns its port. */
export function startUpstream(handler) {
  const server = http.createServer(handler);
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server.address().port));
  });
}

// ---- the gateway ----

/** Everything the gateway has logged so far (stdout and stderr). */
export function gatewayOutput() {
  return gatewayLog;
}

/**
 * Starts the gateway binary on a free loopback port (plain HTTP only, no admin listener, a redb
 * store in the run's directory) with `configFor(base)`, the config's other lines (auth, email,
 * routes...), and waits until it answers /healthz. Returns its base URL.
 */
export async function startGateway(configFor) {
  assert(fs.existsSync(GATEWAY_BIN), `gateway binary not found at ${GATEWAY_BIN} (run cargo build or set GATEWAY_BIN)`);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const config = path.join(tmp, "gateway.yaml");
  fs.writeFileSync(
    config,
    [
      "version: 1",
      "listen:",
      `  http: 127.0.0.1:${port}`,
      "  https: null",
      "admin:",
      "  listen: null",
      "log:",
      "  level: info",
      "store:",
      "  redb:",
      `    path: ${JSON.stringify(path.join(tmp, "store", "gateway.redb"))}`,
      ...configFor(base),
      "",
    ].join("\n"),
  );
  gateway = spawn(GATEWAY_BIN, ["--config", config, "serve"], {
    cwd: tmp,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info", NO_COLOR: "1" },
  });
  const collect = (d) => {
    gatewayLog += d.toString();
  };
  gateway.stdout.on("data", collect);
  gateway.stderr.on("data", collect);
  gateway.on("exit", (code, signal) => {
    gatewayLog += `\n[gateway exited: code ${code}, signal ${signal}]\n`;
  });

  const deadline = Date.now() + 15_000;
  for (;;) {
    if (gateway.exitCode !== null || gateway.signalCode !== null) {
      throw new Error(`gateway exited during start-up (code ${gateway.exitCode})`);
    }
    try {
      const r = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1_000) });
      if (r.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error("gateway did not answer /healthz within 15 s");
    await sleep(100);
  }
  return base;
}

// ---- the SMTP sink ----

/** Starts tests/smtp/sink.py writing into `dir`; returns the port it printed. */
export async function startSink(dir) {
  fs.mkdirSync(dir, { recursive: true });
  sink = spawn("python3", [SINK, dir], { stdio: ["ignore", "pipe", "pipe"] });
  sink.stderr.on("data", (d) => {
    sinkLog += d.toString();
  });
  const exited = new Promise((_, reject) =>
    sink.once("exit", (code) =>
      reject(new Error(`the sink exited (code ${code}): ${sinkLog.trim() || "no output"} (is aiosmtpd installed?)`)),
    ),
  );
  const firstLine = new Promise((resolve) => {
    readline.createInterface({ input: sink.stdout }).once("line", resolve);
  });
  const timeout = sleep(10_000).then(() => {
    throw new Error("the sink printed no port within 10 s");
  });
  const line = await Promise.race([firstLine, exited, timeout]);
  exited.catch(() => {});
  const port = Number(line.trim());
  assert(Number.isInteger(port) && port > 0, `the sink printed ${JSON.stringify(line)}, not its port`);
  return port;
}

/** The messages the sink has stored so far, in order (file names n.json). */
export function mailFiles(dir) {
  return fs
    .readdirSync(dir)
    .filter((f) => /^\d+\.json$/.test(f))
    .sort((a, b) => parseInt(a, 10) - parseInt(b, 10));
}

/** Waits for message number `n` (0-based) in the sink's directory and returns it parsed. */
export async function waitForMail(dir, n, timeoutMs = MAIL_TIMEOUT_MS) {
  const file = path.join(dir, `${n}.json`);
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`no message #${n} reached the SMTP sink within ${timeoutMs} ms`);
    await sleep(50);
  }
  return JSON.parse(fs.readFileSync(file, "utf8"));
}

// ---- the browser ----

/**
 * The command-line flags launchChromium gives Chromium; a script that needs more passes
 * `args: [...CHROMIUM_ARGS, ...]` in its options.
 */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * The check that headless Chromium starts (a persistent context with a profile in the run's
 * directory; `options` adds playwright launch options such as `viewport`), with the step
 * timeouts set. Returns the context and its first page.
 */
export async function launchChromium(options = {}) {
  await step(`headless Chromium (${CHROMIUM_BIN}) starts`, async () => {
    assert(fs.existsSync(CHROMIUM_BIN), `Chromium not found at ${CHROMIUM_BIN} (apt-get install chromium)`);
    context = await chromium.launchPersistentContext(path.join(tmp, "profile"), {
      executablePath: CHROMIUM_BIN,
      headless: true,
      args: CHROMIUM_ARGS,
      ...options,
      timeout: 20_000,
    });
  });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  const page = context.pages()[0] || (await context.newPage());
  return { context, page };
}

/** The browser's cookies by name. */
export async function cookieMap() {
  const all = await context.cookies();
  return Object.fromEntries(all.map((c) => [c.name, c]));
}

/** The payload of the browser session's access token (the gw_access cookie, a JWT). */
export async function accessClaims() {
  const c = await cookieMap();
  assert(c.gw_access && c.gw_access.value, `no gw_access cookie (have ${Object.keys(c)})`);
  const payload = c.gw_access.value.split(".")[1];
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
}

/** Signs out with the hosted page (`{prefix}/logout`, "Sign out"); no access cookie left. */
export async function signOut(page, base, prefix = "/api/auth") {
  await page.goto(`${base}${prefix}/logout`);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL((u) => u.pathname === `${prefix}/login`);
  const c = await cookieMap();
  assert(!(c.gw_access && c.gw_access.value), "gw_access left after sign-out");
}
