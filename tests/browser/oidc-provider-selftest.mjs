// Self-test of tests/browser/oidc-provider.mjs (the OpenID Provider the SSO tests use), without
// the gateway: a tiny relying party of its own (a Node HTTP server on 127.0.0.1 as the
// redirect_uri), Debian's Chromium through playwright-core, fetch for the back channel.
//
// Checks: discovery (http issuer, S256, RS256 + ES256, the groups scope, end_session_endpoint);
// an authorization request without PKCE refused; the code flow in the browser with PKCE S256,
// state and nonce, alice logged in on the dev login page (no consent page); the code exchanged
// with client_secret_basic, the ID token's signature (RS256, kid in the JWKS), iss, aud, nonce,
// email, email_verified, name, groups, and a refresh token; userinfo; setGroups then the refresh
// grant (client_secret_post) showing the new groups in the new ID token and in userinfo;
// rotateKeys() then a new kid in the JWKS and in the next ID token; a second client with ES256
// ID tokens (single sign-on, no login page); RP-initiated logout ("Yes, sign me out", back at
// post_logout_redirect_uri), after which the session-bound refresh token is refused; an unknown
// login name (the login page again); bob with prompt=consent (the consent page, offline_access)
// and email_verified false; removeAccount/setClaims seen by the refresh grant; a code used twice
// refused (and the grant revoked); and the command: one JSON line, the /__test hooks over HTTP,
// exit 0 when stdin closes and on SIGTERM. $OIDC_SELFTEST_VERBOSE=1 prints the provider's log.
//
//   npm ci --prefix tests/browser && node tests/browser/oidc-provider-selftest.mjs
//
// Prints one line per check and `N passed, 0 failed` (exit 1 and `FAILED: ...` on the first
// failure); bounded by $BROWSER_TEST_TIMEOUT_MS (default 60 s), a few seconds in practice.

import { spawn } from "node:child_process";
import { createHash, createPublicKey, randomBytes, verify } from "node:crypto";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { assert, check, launchChromium, run, sleep, startUpstream, step, tempDir } from "./harness.mjs";
import { startProvider } from "./oidc-provider.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const b64url = (buf) => Buffer.from(buf).toString("base64url");

function decodeJwt(jwt) {
  const [h, p, s] = jwt.split(".");
  return {
    header: JSON.parse(Buffer.from(h, "base64url").toString("utf8")),
    payload: JSON.parse(Buffer.from(p, "base64url").toString("utf8")),
    signingInput: `${h}.${p}`,
    signature: Buffer.from(s, "base64url"),
  };
}

/** Verifies an RS256 or ES256 JWT against a JWKS; returns the decoded token. */
function verifyJwt(jwt, jwks) {
  const t = decodeJwt(jwt);
  const jwk = jwks.keys.find((k) => k.kid === t.header.kid);
  assert(jwk, `kid ${t.header.kid} not in the JWKS (${jwks.keys.map((k) => k.kid)})`);
  const key = createPublicKey({ key: jwk, format: "jwk" });
  const opts = t.header.alg === "ES256" ? { key, dsaEncoding: "ieee-p1363" } : key;
  assert(["RS256", "ES256"].includes(t.header.alg), `unexpected alg ${t.header.alg}`);
  assert(verify("sha256", Buffer.from(t.signingInput), opts, t.signature), "bad signature");
  return t;
}

async function json(r) {
  const text = await r.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`HTTP ${r.status}, not JSON: ${text.slice(0, 200)}`);
  }
}

async function main() {
  tempDir("oidc-selftest-");

  // The relying party: /cb and /bye record their query and answer a short page.
  const hits = [];
  const rpPort = await startUpstream((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    hits.push({ path: url.pathname, query: Object.fromEntries(url.searchParams) });
    res.writeHead(200, { "content-type": "text/html" });
    res.end(`<!DOCTYPE html><title>rp</title><p>rp ${url.pathname}</p>`);
  });
  const rp = `http://127.0.0.1:${rpPort}`;
  const redirectUri = `${rp}/cb`;
  const op = await step("the provider starts (module)", () =>
    startProvider({
      clientId: "gw",
      clientSecret: "s3cret",
      redirectUris: [redirectUri],
      postLogoutRedirectUris: [`${rp}/bye`],
      // $OIDC_SELFTEST_VERBOSE=1: the provider's event log on stderr.
      log: process.env.OIDC_SELFTEST_VERBOSE ? (line) => console.error(`[op] ${line}`) : undefined,
      extraClients: [
        {
          client_id: "gw-es",
          client_secret: "es-secret",
          redirect_uris: [redirectUri],
          grant_types: ["authorization_code", "refresh_token"],
          response_types: ["code"],
          id_token_signed_response_alg: "ES256",
        },
      ],
    }),
  );
  try {
    await checks(op, rp, redirectUri, hits);
  } finally {
    await op.close();
  }
  await cliChecks();
}

async function checks(op, rp, redirectUri, hits) {
  const { issuer } = op;
  check("issuer is http://127.0.0.1:PORT", issuer === `http://127.0.0.1:${op.port}`, issuer);

  const disco = await step("discovery", async () => {
    const d = await json(await fetch(`${issuer}/.well-known/openid-configuration`));
    assert(d.issuer === issuer, `issuer ${d.issuer}`);
    assert(d.code_challenge_methods_supported.includes("S256"), "no S256");
    for (const alg of ["RS256", "ES256"]) {
      assert(d.id_token_signing_alg_values_supported.includes(alg), `no ${alg}`);
    }
    for (const s of ["openid", "email", "profile", "groups", "offline_access"]) {
      assert(d.scopes_supported.includes(s), `scope ${s} missing`);
    }
    assert(d.claims_supported.includes("groups"), "claim groups missing");
    for (const m of ["client_secret_basic", "client_secret_post"]) {
      assert(d.token_endpoint_auth_methods_supported.includes(m), `no ${m}`);
    }
    assert(d.end_session_endpoint === `${issuer}/session/end`, `end_session_endpoint ${d.end_session_endpoint}`);
    assert(d.grant_types_supported.includes("refresh_token"), "no refresh_token grant");
    return d;
  });
  const jwks1 = await json(await fetch(disco.jwks_uri));

  await step("an authorization request without PKCE is refused", async () => {
    const u = new URL(disco.authorization_endpoint);
    u.search = new URLSearchParams({
      client_id: "gw",
      response_type: "code",
      scope: "openid",
      redirect_uri: redirectUri,
      state: "s",
    });
    const r = await fetch(u, { redirect: "manual" });
    const loc = new URL(r.headers.get("location"), issuer);
    assert(r.status === 303 || r.status === 302, `status ${r.status}`);
    assert(loc.searchParams.get("error") === "invalid_request", `location ${loc}`);
    assert(/PKCE|code_challenge/.test(loc.searchParams.get("error_description")), loc.searchParams.get("error_description"));
  });

  const { page } = await launchChromium();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("requestfailed", (r) => pageErrors.push(`request failed: ${r.url()}`));

  // ---- the code flow ----
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash("sha256").update(verifier).digest());
  const state = b64url(randomBytes(16));
  const nonce = b64url(randomBytes(16));
  const auth = new URL(disco.authorization_endpoint);
  auth.search = new URLSearchParams({
    client_id: "gw",
    response_type: "code",
    scope: "openid email profile groups",
    redirect_uri: redirectUri,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });

  await step("the authorization request shows the dev login page", async () => {
    await page.goto(auth.href);
    await page.waitForURL((u) => u.pathname.startsWith("/interaction/"));
    await page.getByRole("heading", { name: "Sign-in" }).waitFor();
    assert((await page.locator('input[name="login"]').count()) === 1, "no input[name=login]");
    assert((await page.locator('input[name="password"]').count()) === 1, "no input[name=password]");
  });

  const code = await step("alice signs in (no consent page), the code reaches the redirect_uri", async () => {
    await page.locator('input[name="login"]').fill("alice");
    await page.locator('input[name="password"]').fill("anything");
    await page.getByRole("button", { name: "Sign-in" }).click();
    await page.waitForURL((u) => u.href.startsWith(redirectUri));
    const q = Object.fromEntries(new URL(page.url()).searchParams);
    assert(q.state === state, `state ${q.state}`);
    assert(q.iss === issuer, `iss ${q.iss}`);
    assert(q.code, `no code: ${JSON.stringify(q)}`);
    assert(hits.some((h) => h.path === "/cb" && h.query.code === q.code), "the RP did not see the code");
    return q.code;
  });

  const basic = `Basic ${Buffer.from("gw:s3cret").toString("base64")}`;
  const tokens = await step("the code is exchanged (client_secret_basic, code_verifier)", async () => {
    const r = await fetch(disco.token_endpoint, {
      method: "POST",
      headers: { authorization: basic, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "authorization_code", code, redirect_uri: redirectUri, code_verifier: verifier }),
    });
    const t = await json(r);
    assert(r.status === 200, `HTTP ${r.status} ${JSON.stringify(t)}`);
    assert(t.id_token && t.access_token && t.token_type === "Bearer", JSON.stringify(Object.keys(t)));
    assert(typeof t.refresh_token === "string" && t.refresh_token.length > 10, "no refresh_token");
    return t;
  });

  const id1 = await step("the ID token: RS256, kid in the JWKS, iss, aud, nonce, email, email_verified, name, groups", async () => {
    const t = verifyJwt(tokens.id_token, jwks1);
    const c = t.payload;
    assert(t.header.alg === "RS256", `alg ${t.header.alg}`);
    assert(c.iss === issuer, `iss ${c.iss}`);
    assert(c.aud === "gw", `aud ${c.aud}`);
    assert(c.sub === "alice", `sub ${c.sub}`);
    assert(c.nonce === nonce, `nonce ${c.nonce}`);
    assert(c.email === "alice@example.com", `email ${c.email}`);
    assert(c.email_verified === true, `email_verified ${c.email_verified}`);
    assert(c.name === "Alice Example", `name ${c.name}`);
    assert(JSON.stringify(c.groups) === JSON.stringify(["engineering", "admins"]), `groups ${JSON.stringify(c.groups)}`);
    assert(c.at_hash === undefined || typeof c.at_hash === "string", "at_hash");
    console.log(`#   ID token claims: ${Object.keys(c).sort().join(" ")}`);
    return t;
  });

  await step("userinfo has the same claims", async () => {
    const r = await fetch(disco.userinfo_endpoint, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    const u = await json(r);
    assert(r.status === 200, `HTTP ${r.status} ${JSON.stringify(u)}`);
    assert(u.sub === "alice" && u.email === "alice@example.com" && u.email_verified === true, JSON.stringify(u));
    assert(JSON.stringify(u.groups) === JSON.stringify(["engineering", "admins"]), JSON.stringify(u.groups));
    console.log(`#   userinfo claims: ${Object.keys(u).sort().join(" ")}`);
  });

  // ---- group change, then refresh ----
  op.setGroups("alice", ["engineering"]);
  const refreshPost = async (refreshToken) => {
    const r = await fetch(disco.token_endpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: refreshToken,
        client_id: "gw",
        client_secret: "s3cret",
      }),
    });
    return { status: r.status, body: await json(r) };
  };
  const refreshed = await step("after setGroups, the refresh grant (client_secret_post) gives an ID token with the new groups", async () => {
    const { status, body } = await refreshPost(tokens.refresh_token);
    assert(status === 200, `HTTP ${status} ${JSON.stringify(body)}`);
    assert(body.id_token, `no id_token in the refresh response: ${Object.keys(body)}`);
    const t = verifyJwt(body.id_token, jwks1);
    assert(JSON.stringify(t.payload.groups) === JSON.stringify(["engineering"]), `groups ${JSON.stringify(t.payload.groups)}`);
    assert(t.payload.sub === "alice" && t.payload.aud === "gw" && t.payload.iss === issuer, "sub/aud/iss");
    console.log(
      `#   refresh response: ${Object.keys(body).sort().join(" ")}; refresh_token ${body.refresh_token === tokens.refresh_token ? "the same (not rotated)" : "rotated"}; ID token nonce ${t.payload.nonce === undefined ? "absent" : "present"}`,
    );
    return body;
  });
  await step("userinfo with the refreshed access token shows the new groups", async () => {
    const r = await fetch(disco.userinfo_endpoint, { headers: { authorization: `Bearer ${refreshed.access_token}` } });
    const u = await json(r);
    assert(JSON.stringify(u.groups) === JSON.stringify(["engineering"]), JSON.stringify(u.groups));
  });

  // ---- key rotation ----
  const rotated = await step("rotateKeys(): a new kid, first in the JWKS, the old one still there", async () => {
    const out = await op.rotateKeys();
    const jwks = await json(await fetch(disco.jwks_uri, { cache: "no-store" }));
    const kids = jwks.keys.map((k) => k.kid);
    assert(!jwks1.keys.some((k) => k.kid === out.kid), "kid not new");
    assert(kids[0] === out.kid, `JWKS ${kids}`);
    assert(kids.includes(id1.header.kid), "the old kid was dropped");
    assert(jwks.keys.every((k) => !k.d), "private parts in the JWKS");
    return { ...out, jwks };
  });
  await step("the next ID token (refresh grant) carries the new kid", async () => {
    const { status, body } = await refreshPost(refreshed.refresh_token || tokens.refresh_token);
    assert(status === 200, `HTTP ${status} ${JSON.stringify(body)}`);
    const t = verifyJwt(body.id_token, rotated.jwks);
    assert(t.header.kid === rotated.kid && t.header.kid !== id1.header.kid, `kid ${t.header.kid}`);
    assert(!jwks1.keys.some((k) => k.kid === t.header.kid), "a relying party with the old JWKS would know this kid");
  });

  // ---- ES256 for a client that asks for it; single sign-on ----
  await step("a second client with ES256 ID tokens: no login page (session), ES256 signature", async () => {
    const v = b64url(randomBytes(32));
    const u = new URL(disco.authorization_endpoint);
    u.search = new URLSearchParams({
      client_id: "gw-es",
      response_type: "code",
      scope: "openid email groups",
      redirect_uri: redirectUri,
      state: "es",
      nonce: "n-es",
      code_challenge: b64url(createHash("sha256").update(v).digest()),
      code_challenge_method: "S256",
    });
    await page.goto(u.href);
    await page.waitForURL((x) => x.href.startsWith(redirectUri) && x.searchParams.get("state") === "es");
    const c = new URL(page.url()).searchParams.get("code");
    const r = await fetch(disco.token_endpoint, {
      method: "POST",
      headers: {
        authorization: `Basic ${Buffer.from("gw-es:es-secret").toString("base64")}`,
        "content-type": "application/x-www-form-urlencoded",
      },
      body: new URLSearchParams({ grant_type: "authorization_code", code: c, redirect_uri: redirectUri, code_verifier: v }),
    });
    const t = await json(r);
    assert(r.status === 200, `HTTP ${r.status} ${JSON.stringify(t)}`);
    const id = verifyJwt(t.id_token, rotated.jwks);
    assert(id.header.alg === "ES256" && id.header.kid === rotated.es256Kid, `${id.header.alg} ${id.header.kid}`);
    assert(id.payload.sub === "alice" && id.payload.aud === "gw-es", JSON.stringify(id.payload));
  });

  // ---- RP-initiated logout ----
  await step("RP-initiated logout: 'Yes, sign me out', back at post_logout_redirect_uri with state", async () => {
    const u = new URL(disco.end_session_endpoint);
    u.search = new URLSearchParams({
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: `${rp}/bye`,
      state: "bye-state",
    });
    await page.goto(u.href);
    await page.getByRole("button", { name: "Yes, sign me out" }).click();
    await page.waitForURL((x) => x.href.startsWith(`${rp}/bye`));
    assert(new URL(page.url()).searchParams.get("state") === "bye-state", page.url());
  });
  await step("after the logout, the session-bound refresh token is refused (invalid_grant)", async () => {
    const { status, body } = await refreshPost(tokens.refresh_token);
    assert(status === 400 && body.error === "invalid_grant", `HTTP ${status} ${JSON.stringify(body)}`);
  });

  // ---- bob: email_verified false ----
  const bob = await step("bob signs in (prompt=consent: the consent page, 'Continue'), offline_access granted, email_verified false (an unknown login name first: the login page again)", async () => {
    const v = b64url(randomBytes(32));
    const u = new URL(disco.authorization_endpoint);
    u.search = new URLSearchParams({
      client_id: "gw",
      response_type: "code",
      scope: "openid email profile groups offline_access",
      redirect_uri: redirectUri,
      state: "bob",
      nonce: "n-bob",
      // offline_access is dropped unless prompt has consent; prompt=consent shows the consent page.
      prompt: "consent",
      code_challenge: b64url(createHash("sha256").update(v).digest()),
      code_challenge_method: "S256",
    });
    await page.goto(u.href);
    // An unknown login name: the login page again.
    await page.locator('input[name="login"]').fill("mallory");
    await page.locator('input[name="password"]').fill("x");
    await page.getByRole("button", { name: "Sign-in" }).click();
    await page.waitForLoadState();
    await page.getByRole("heading", { name: "Sign-in" }).waitFor();
    assert(new URL(page.url()).pathname.startsWith("/interaction/"), `after mallory: ${page.url()}`);
    assert(!hits.some((h) => h.query.state === "bob"), "mallory got through");
    await page.locator('input[name="login"]').fill("bob");
    await page.locator('input[name="password"]').fill("x");
    await page.getByRole("button", { name: "Sign-in" }).click();
    // The layout's <title> is always "Sign-in"; the <h1> says "Authorize" on the consent page.
    await page.getByRole("heading", { name: "Authorize" }).waitFor();
    await page.getByRole("button", { name: "Continue" }).click();
    await page.waitForURL((x) => x.href.startsWith(redirectUri) && x.searchParams.get("state") === "bob");
    const c = new URL(page.url()).searchParams.get("code");
    const r = await fetch(disco.token_endpoint, {
      method: "POST",
      headers: { authorization: basic, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "authorization_code", code: c, redirect_uri: redirectUri, code_verifier: v }),
    });
    const t = await json(r);
    assert(r.status === 200 && t.refresh_token, `HTTP ${r.status} ${JSON.stringify(t)}`);
    assert(t.scope.split(" ").includes("offline_access"), `scope ${t.scope}`);
    const id = verifyJwt(t.id_token, rotated.jwks).payload;
    assert(id.sub === "bob" && id.email === "bob@example.com" && id.email_verified === false, JSON.stringify(id));
    assert(JSON.stringify(id.groups) === JSON.stringify(["engineering"]), JSON.stringify(id.groups));
    return { code: c, verifier: v, tokens: t };
  });
  await step("removeAccount: bob's refresh grant is refused; setClaims brings him back", async () => {
    let r = await refreshPost(bob.tokens.refresh_token);
    assert(r.status === 200, `HTTP ${r.status} ${JSON.stringify(r.body)}`);
    op.removeAccount("bob");
    r = await refreshPost(bob.tokens.refresh_token);
    assert(r.status === 400 && r.body.error === "invalid_grant", `HTTP ${r.status} ${JSON.stringify(r.body)}`);
    op.setClaims("bob", { email: "bob@example.com", email_verified: true, name: "Bob", groups: ["x"] });
    r = await refreshPost(bob.tokens.refresh_token);
    assert(r.status === 200, `HTTP ${r.status} ${JSON.stringify(r.body)}`);
    const id = decodeJwt(r.body.id_token).payload;
    assert(id.email_verified === true && JSON.stringify(id.groups) === '["x"]', JSON.stringify(id));
  });
  await step("a code used twice is refused, and that revokes the grant (bob's refresh token refused)", async () => {
    const r = await fetch(disco.token_endpoint, {
      method: "POST",
      headers: { authorization: basic, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "authorization_code", code: bob.code, redirect_uri: redirectUri, code_verifier: bob.verifier }),
    });
    const t = await json(r);
    assert(r.status === 400 && t.error === "invalid_grant", `HTTP ${r.status} ${JSON.stringify(t)}`);
    const { status, body } = await refreshPost(bob.tokens.refresh_token);
    assert(status === 400 && body.error === "invalid_grant", `HTTP ${status} ${JSON.stringify(body)}`);
  });

  check("no page errors or failed requests in the browser", pageErrors.length === 0, pageErrors.join("; "));
}

// ---- the command ----

function spawnCli(args) {
  const child = spawn(process.execPath, [path.join(here, "oidc-provider.mjs"), ...args], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const exited = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
  const first = new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).once("line", resolve);
    exited.then(() => reject(new Error(`exited early: ${stderr}`)));
  });
  return { child, first, exited, stderr: () => stderr };
}

/** The command's first line, or an error (naming what it printed to stderr) after 15 s. */
async function firstLine(cli) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => {
      cli.child.kill("SIGKILL");
      reject(new Error(`no line in 15 s: ${cli.stderr()}`));
    }, 15_000);
  });
  try {
    return await Promise.race([cli.first, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function cliChecks() {
  const cli = spawnCli(["--port", "0", "--client-id", "gw", "--client-secret", "s3cret", "--redirect-uri", "http://127.0.0.1:9/cb"]);
  const info = await step("the command prints one JSON line {issuer, port}", async () => {
    const line = await firstLine(cli);
    const o = JSON.parse(line);
    assert(o.issuer === `http://127.0.0.1:${o.port}` && o.port > 0, line);
    assert(JSON.stringify(Object.keys(o)) === '["issuer","port"]', line);
    return o;
  });
  await step("the command's hooks: POST /__test/groups, POST /__test/rotate", async () => {
    let r = await fetch(`${info.issuer}/__test/groups`, {
      method: "POST",
      body: JSON.stringify({ account: "alice", groups: [] }),
    });
    let b = await json(r);
    assert(r.status === 200 && JSON.stringify(b) === '{"account":"alice","groups":[]}', JSON.stringify(b));
    const before = (await json(await fetch(`${info.issuer}/jwks`))).keys.map((k) => k.kid);
    r = await fetch(`${info.issuer}/__test/rotate`, { method: "POST" });
    b = await json(r);
    const after = (await json(await fetch(`${info.issuer}/jwks`))).keys.map((k) => k.kid);
    assert(r.status === 200 && after[0] === b.kid && !before.includes(b.kid), `${JSON.stringify(b)} ${after}`);
    r = await fetch(`${info.issuer}/__test/groups`, { method: "POST", body: '{"account":"nobody","groups":[]}' });
    assert(r.status === 400, `unknown account: HTTP ${r.status}`);
  });
  await step("the command exits 0 when its stdin closes", async () => {
    cli.child.stdin.end();
    const r = await Promise.race([cli.exited, sleep(5_000).then(() => null)]);
    if (!r) cli.child.kill("SIGKILL");
    assert(r && r.code === 0, `exit ${JSON.stringify(r)}: ${cli.stderr()}`);
  });
  const cli2 = spawnCli(["--port", "0"]);
  await step("the command exits 0 on SIGTERM", async () => {
    await firstLine(cli2);
    cli2.child.kill("SIGTERM");
    const r = await Promise.race([cli2.exited, sleep(5_000).then(() => null)]);
    if (!r) cli2.child.kill("SIGKILL");
    assert(r && r.code === 0, `exit ${JSON.stringify(r)}: ${cli2.stderr()}`);
  });
}

run(main);
