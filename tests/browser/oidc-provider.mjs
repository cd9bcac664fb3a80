// A real OpenID Provider for the single sign-on (OIDC) tests: the certified `oidc-provider` npm
// package (pinned in package.json) on plain http://127.0.0.1:PORT, with one confidential `web`
// client, four test users, and hooks a test can pull at run time (group changes, key rotation).
//
// As a module (browser tests):
//
//   import { startProvider } from "./oidc-provider.mjs";
//   const op = await startProvider({ clientId: "gw", clientSecret: "s3cret",
//     redirectUris: [`${base}/api/auth/sso/corp/callback`], postLogoutRedirectUris: [`${base}/`] });
//   op.issuer            // "http://127.0.0.1:41234" (no trailing slash)
//   op.setGroups("alice", ["engineering"]);
//   const { kid } = await op.rotateKeys();
//   await op.close();
//
// As a command (Rust tests spawn it as a child process):
//
//   node tests/browser/oidc-provider.mjs --port 0 --client-id gw --client-secret s3cret \
//     --redirect-uri http://127.0.0.1:PORT/api/auth/sso/corp/callback [--redirect-uri ...] \
//     [--post-logout-redirect-uri ...] [--id-token-alg RS256|ES256] [--no-skip-consent] \
//     [--no-require-pkce] [--access-token-ttl S] [--id-token-ttl S] [--refresh-token-ttl S] \
//     [--verbose]
//
// prints ONE JSON line on stdout once listening, `{"issuer":"http://127.0.0.1:41234","port":41234}`,
// and nothing else on stdout (oidc-provider's notices and the event log go to stderr). It exits
// with status 0 on SIGTERM/SIGINT, and when its stdin is a pipe or socket that closes (a Rust test
// spawns it with `Stdio::piped()` stdin and keeps the handle: the child dies with the test; with
// stdin from /dev/null or a terminal the stdin watch is off).
//
// Test hooks, on the provider's own port (module and command alike), JSON in and out:
//   POST /__test/groups   {"account":"alice","groups":[]}            -> {"account","groups"}
//   POST /__test/claims   {"account":"erin","claims":{...}}          -> {"account","claims"}
//                         (merged into the account's claims; creates the account if it is new)
//   POST /__test/remove-account {"account":"bob"}                   -> {"account","removed"}
//                         (the refresh grant then fails with invalid_grant)
//   POST /__test/rotate   {} or {"dropOld":true}                     -> {"kid","es256Kid","kids"}
//   GET  /__test/state                                               -> {"accounts","kids"}
//
// What the provider does:
//   * issuer http://127.0.0.1:PORT, discovery at /.well-known/openid-configuration; endpoints
//     /auth, /token, /me (userinfo), /jwks, /session/end (RP-initiated logout),
//     /token/revocation, /token/introspection.
//   * client: application_type web, client_secret_basic and client_secret_post (either is
//     accepted, the client's token_endpoint_auth_method is client_secret_basic), grant types
//     authorization_code + refresh_token, response_type code, http loopback redirect_uris (matched
//     exactly, port and path included), PKCE S256 required by default (`plain` is not supported).
//   * scopes openid, offline_access, email (email, email_verified), profile (name,
//     preferred_username), groups (groups). Claims of the granted scopes are in the ID token too
//     (conformIdTokenClaims: false) and in userinfo.
//   * a refresh token is issued for every code grant of the client (offline_access not needed).
//     oidc-provider drops a requested offline_access unless the request has prompt=consent (which
//     then shows the consent page even with skipConsent). Without offline_access the refresh
//     token is bound to the provider's login session: RP-initiated logout at the provider makes
//     it invalid_grant. It is not rotated (the refresh response repeats the same one). The
//     refresh grant returns a new ID token whose claims are read afresh (setGroups shows there,
//     and in userinfo); it repeats the original nonce. A code used twice is refused and revokes
//     the grant (its refresh token too).
//   * the authorization response carries `iss` (RFC 9207) besides code and state. ID token
//     claims: iss sub aud exp iat nonce + the granted scopes' claims (no auth_time, sid, at_hash).
//   * consent is skipped for the test client by default (skipConsent: false shows oidc-provider's
//     consent page: button "Continue", `button[type=submit].login-submit`).
//   * the login page (oidc-provider's dev interactions): input[name=login] (the account id),
//     input[name=password] (anything), button "Sign-in" (`button[type=submit].login-submit`).
//     An unknown login name shows the login page again.
//   * ID tokens RS256 by default (idTokenSigningAlg "ES256" for the client's ES256); the JWKS has
//     one RSA and one P-256 key, fresh per start; rotateKeys() puts new ones first.

import { generateKeyPairSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

// oidc-provider's expected warnings (console.warn) are kept off the output: "Unsupported runtime"
// on import under Node.js 20 (this version works there: it needs URL.parse and crypto.hash, in
// Node 20.18+; the self-test proves it), and the dev interactions notice at every construction
// (the dev login page is what the tests want). Any other warning is printed.
const EXPECTED_WARNINGS = [
  /^oidc-provider WARNING: Unsupported runtime/,
  /^oidc-provider WARNING: a quick start development-only feature devInteractions/,
];
async function withoutExpectedWarnings(fn) {
  const warn = console.warn;
  console.warn = (...args) => {
    if (typeof args[0] === "string" && EXPECTED_WARNINGS.some((re) => re.test(args[0]))) return;
    warn(...args);
  };
  try {
    return await fn();
  } finally {
    console.warn = warn;
  }
}
const { default: Provider, interactionPolicy } = await withoutExpectedWarnings(() => import("oidc-provider"));

/** The test users: the login name is the account id (and the `sub`). */
export const DEFAULT_ACCOUNTS = {
  alice: {
    email: "alice@example.com",
    email_verified: true,
    name: "Alice Example",
    groups: ["engineering", "admins"],
  },
  bob: { email: "bob@example.com", email_verified: false, name: "Bob Example", groups: ["engineering"] },
  carol: {
    email: "carol@contractor.test",
    email_verified: true,
    name: "Carol Contractor",
    groups: ["contractors"],
  },
  dave: { email: "dave@example.com", email_verified: true, name: "Dave Example", groups: [] },
};

const TEST_PREFIX = "/__test/";

// ---- keys ----

function newSigningKeys() {
  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" });
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" });
  const suffix = `${new Date().toISOString().replace(/[-:.TZ]/g, "")}-${randomBytes(4).toString("hex")}`;
  return [
    { ...rsa, kid: `rs-${suffix}`, use: "sig", alg: "RS256" },
    { ...ec, kid: `es-${suffix}`, use: "sig", alg: "ES256" },
  ];
}

// ---- storage (shared by the Provider instances a key rotation makes) ----

/**
 * A small in-memory adapter factory: the same store outlives the Provider instances that key
 * rotation swaps in, so sessions, grants, codes and refresh tokens survive a rotation.
 */
function memoryAdapter() {
  const store = new Map(); // key -> { payload, expiresAt }
  const grants = new Map(); // grantId -> Set of keys
  const sessionUids = new Map(); // uid -> id
  const userCodes = new Map(); // userCode -> id
  const get = (key) => {
    const hit = store.get(key);
    if (!hit) return undefined;
    if (hit.expiresAt && hit.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return hit.payload;
  };
  return class TestAdapter {
    constructor(model) {
      this.model = model;
    }
    key(id) {
      return `${this.model}:${id}`;
    }
    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      store.set(key, { payload, expiresAt: typeof expiresIn === "number" ? Date.now() + expiresIn * 1000 : 0 });
      if (this.model === "Session" && payload.uid) sessionUids.set(payload.uid, id);
      if (payload.userCode) userCodes.set(payload.userCode, id);
      if (payload.grantId) {
        if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
        grants.get(payload.grantId).add(key);
      }
    }
    async find(id) {
      return get(this.key(id));
    }
    async findByUid(uid) {
      const id = sessionUids.get(uid);
      return id === undefined ? undefined : this.find(id);
    }
    async findByUserCode(userCode) {
      const id = userCodes.get(userCode);
      return id === undefined ? undefined : this.find(id);
    }
    async consume(id) {
      const payload = get(this.key(id));
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id) {
      store.delete(this.key(id));
    }
    async revokeByGrantId(grantId) {
      for (const key of grants.get(grantId) || []) store.delete(key);
      grants.delete(grantId);
    }
  };
}

// ---- pages without outside resources (no network here: no web fonts) ----

const escape = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const page = (title, body) =>
  `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>` +
  `<body><h1>${escape(title)}</h1>${body}</body></html>`;

// ---- the provider ----

/**
 * Starts the provider on `host`:`port` (port 0: a free one). Options (all optional):
 *   port (0), host ("127.0.0.1"), clientId ("gw"), clientSecret ("s3cret"),
 *   redirectUris ([]), postLogoutRedirectUris ([]), idTokenSigningAlg ("RS256" | "ES256"),
 *   skipConsent (true), requirePkce (true), accounts (merged over DEFAULT_ACCOUNTS),
 *   ttl ({ AccessToken: 3600, IdToken: 3600, RefreshToken: 14 days, Session: 14 days, ... },
 *   seconds), extraClients ([oidc-provider client metadata]), log ((line) => {}).
 * Returns { issuer, port, clientId, clientSecret, provider (the current instance), logs,
 *   setGroups, setClaims, removeAccount, accounts(), rotateKeys, kids(), close }.
 */
export async function startProvider(options = {}) {
  const host = options.host || "127.0.0.1";
  const clientId = options.clientId || "gw";
  const clientSecret = options.clientSecret || "s3cret";
  const idTokenSigningAlg = options.idTokenSigningAlg || "RS256";
  const skipConsent = options.skipConsent !== false;
  const requirePkce = options.requirePkce !== false;
  const logs = [];
  const log = (line) => {
    logs.push(line);
    if (logs.length > 500) logs.shift();
    if (options.log) options.log(line);
  };

  const accounts = new Map();
  for (const [id, claims] of Object.entries({ ...DEFAULT_ACCOUNTS, ...(options.accounts || {}) })) {
    accounts.set(id, structuredClone(claims));
  }

  const ttl = {
    AccessToken: 60 * 60,
    AuthorizationCode: 60,
    ClientCredentials: 10 * 60,
    DeviceCode: 10 * 60,
    BackchannelAuthenticationRequest: 10 * 60,
    PreAuthorizedCode: 10 * 60,
    IdToken: 60 * 60,
    RefreshToken: 14 * 24 * 60 * 60,
    Interaction: 60 * 60,
    Session: 14 * 24 * 60 * 60,
    Grant: 14 * 24 * 60 * 60,
    ...(options.ttl || {}),
  };

  const client = {
    client_id: clientId,
    client_secret: clientSecret,
    client_name: "gateway (test client)",
    application_type: "web",
    redirect_uris: options.redirectUris || [],
    post_logout_redirect_uris: options.postLogoutRedirectUris || [],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
    id_token_signed_response_alg: idTokenSigningAlg,
  };
  const clients = [client, ...(options.extraClients || [])];
  const skipConsentFor = new Set(skipConsent ? clients.map((c) => c.client_id) : []);

  const cookieKeys = [randomBytes(32).toString("base64url")];
  const Adapter = memoryAdapter();
  let keys = newSigningKeys();

  async function findAccount(_ctx, sub) {
    if (!accounts.has(sub)) return undefined;
    return {
      accountId: sub,
      // Read at every call, so group changes show in the next ID token and userinfo.
      async claims() {
        const a = accounts.get(sub) || {};
        return { sub, preferred_username: sub, ...structuredClone(a) };
      },
    };
  }

  // Consent skipped: the grant is made (or widened) with the requested scopes without a prompt.
  async function loadExistingGrant(ctx) {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
    if (!skipConsentFor.has(oidc.client.clientId)) return grant;
    if (!grant || grant.accountId !== oidc.session.accountId) {
      grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
    }
    const scopes = [...oidc.requestParamOIDCScopes];
    if (scopes.length) grant.addOIDCScope(scopes.join(" "));
    await grant.save();
    return grant;
  }

  // An unknown login name on the dev login page: the login page again (oidc-provider would
  // otherwise accept any name and fail later with server_error).
  const policy = interactionPolicy.base();
  policy.get("login").checks.add(
    new interactionPolicy.Check("unknown_account", "the login name is not a known account", (ctx) =>
      ctx.oidc.session.accountId && !ctx.oidc.account
        ? interactionPolicy.Check.REQUEST_PROMPT
        : interactionPolicy.Check.NO_NEED_TO_PROMPT,
    ),
  );

  let server = null;
  let issuer = null;
  let current = null; // { provider, callback }

  async function makeProvider() {
    return withoutExpectedWarnings(() => newProvider());
  }

  function newProvider() {
    const provider = new Provider(issuer, {
      adapter: Adapter,
      clients: structuredClone(clients),
      jwks: { keys: structuredClone(keys) },
      findAccount,
      loadExistingGrant,
      interactions: { policy },
      claims: {
        openid: ["sub"],
        email: ["email", "email_verified"],
        profile: ["name", "preferred_username"],
        groups: ["groups"],
      },
      scopes: ["openid", "offline_access", "email", "profile", "groups"],
      conformIdTokenClaims: false,
      issueRefreshToken: async (_ctx, c) => c.grantTypeAllowed("refresh_token"),
      pkce: { required: () => requirePkce },
      cookies: { keys: cookieKeys },
      ttl,
      features: {
        devInteractions: { enabled: true },
        rpInitiatedLogout: {
          enabled: true,
          async logoutSource(ctx, form) {
            ctx.body = page(
              `Do you want to sign-out from ${ctx.host}?`,
              `${form}<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>` +
                `<button type="submit" form="op.logoutForm">No, stay signed in</button>`,
            );
          },
          async postLogoutSuccessSource(ctx) {
            ctx.body = page("Sign-out Success", "<p>Your sign-out was successful.</p>");
          },
        },
        revocation: {
          enabled: true,
          allowedPolicy: async (_ctx, c, token) => token.clientId === c.clientId,
        },
        introspection: { enabled: true, allowedPolicy: async () => true },
        userinfo: { enabled: true },
      },
      async renderError(ctx, out) {
        ctx.type = "html";
        ctx.body = page(
          "oops! something went wrong",
          Object.entries(out)
            .map(([k, v]) => `<pre><strong>${escape(k)}</strong>: ${escape(v)}</pre>`)
            .join(""),
        );
      },
    });
    // The dev interaction pages @import a web font; there is no network here.
    provider.use(async (ctx, next) => {
      await next();
      if (typeof ctx.body === "string" && ctx.body.includes("fonts.googleapis.com")) {
        ctx.body = ctx.body.replace(/@import url\(https:\/\/fonts\.googleapis\.com[^)]*\);?/g, "");
      }
    });
    for (const event of [
      "server_error",
      "authorization.error",
      "grant.error",
      "end_session.error",
      "userinfo.error",
      "introspection.error",
      "revocation.error",
      "jwks.error",
      "discovery.error",
    ]) {
      provider.on(event, (...args) => {
        const err = args.find((a) => a instanceof Error);
        log(`oidc-provider ${event}: ${err ? `${err.message}${err.error_description ? ` (${err.error_description})` : ""}${err.error_detail ? ` [${err.error_detail}]` : ""}` : ""}`);
      });
    }
    for (const event of ["authorization.success", "grant.success", "end_session.success"]) {
      provider.on(event, (ctx) => log(`oidc-provider ${event}: ${ctx.method} ${ctx.path}`));
    }
    return { provider, callback: provider.callback() };
  }

  // ---- test hooks ----

  function setGroups(account, groups) {
    if (!Array.isArray(groups) || !groups.every((g) => typeof g === "string")) {
      throw new TypeError("groups must be an array of strings");
    }
    if (!accounts.has(account)) throw new Error(`unknown account ${JSON.stringify(account)}`);
    accounts.get(account).groups = [...groups];
    log(`test hook: groups of ${account} = ${JSON.stringify(groups)}`);
    return { account, groups: [...groups] };
  }

  function setClaims(account, claims) {
    if (typeof account !== "string" || !account) throw new TypeError("account must be a non-empty string");
    if (!claims || typeof claims !== "object") throw new TypeError("claims must be an object");
    const merged = { ...(accounts.get(account) || {}), ...structuredClone(claims) };
    accounts.set(account, merged);
    log(`test hook: claims of ${account} = ${JSON.stringify(merged)}`);
    return { account, claims: structuredClone(merged) };
  }

  function removeAccount(account) {
    const removed = accounts.delete(account);
    log(`test hook: account ${account} removed: ${removed}`);
    return { account, removed };
  }

  const kids = () => keys.map((k) => k.kid);

  /**
   * New RSA and P-256 signing keys (new kids) become the current ones, first in the JWKS; the
   * old ones stay published (tokens they signed still verify) unless `dropOld`. Sessions,
   * grants and tokens are kept. Returns { kid (the new RS256 one), es256Kid, kids }.
   */
  async function rotateKeys({ dropOld = false } = {}) {
    const fresh = newSigningKeys();
    keys = dropOld ? fresh : [...fresh, ...keys];
    current = await makeProvider();
    log(`test hook: keys rotated, current ${fresh[0].kid} / ${fresh[1].kid}`);
    return { kid: fresh[0].kid, es256Kid: fresh[1].kid, kids: kids() };
  }

  async function testHook(req, res) {
    const reply = (status, body) => {
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify(body));
    };
    try {
      const route = req.url.split("?")[0].slice(TEST_PREFIX.length);
      if (req.method === "GET" && route === "state") {
        return reply(200, { accounts: Object.fromEntries(accounts), kids: kids() });
      }
      if (req.method !== "POST") return reply(405, { error: "POST expected" });
      let raw = "";
      for await (const chunk of req) raw += chunk;
      const body = raw.trim() ? JSON.parse(raw) : {};
      switch (route) {
        case "groups":
          return reply(200, setGroups(body.account, body.groups));
        case "claims":
          return reply(200, setClaims(body.account, body.claims));
        case "remove-account":
          return reply(200, removeAccount(body.account));
        case "rotate":
          return reply(200, await rotateKeys({ dropOld: body.dropOld === true }));
        default:
          return reply(404, { error: `no test hook ${route}` });
      }
    } catch (e) {
      return reply(400, { error: e.message });
    }
  }

  server = http.createServer((req, res) => {
    if (req.url.startsWith(TEST_PREFIX)) {
      testHook(req, res);
      return;
    }
    if (!current) {
      res.writeHead(503, { "retry-after": "1" }).end("starting");
      return;
    }
    current.callback(req, res);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port || 0, host, resolve);
  });
  const port = server.address().port;
  issuer = `http://${host}:${port}`;
  current = await makeProvider();
  log(`listening: ${issuer}`);

  let closed = null;
  function close() {
    closed ||= new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closed;
  }

  return {
    issuer,
    port,
    clientId,
    clientSecret,
    get provider() {
      return current.provider;
    },
    logs,
    accounts: () => structuredClone(Object.fromEntries(accounts)),
    setGroups,
    setClaims,
    removeAccount,
    rotateKeys,
    kids,
    close,
  };
}

// ---- the command ----

async function main() {
  // stdout carries the one JSON line only: oidc-provider's notices (console.info) go to stderr.
  console.log = console.info = (...a) => console.error(...a);
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "0" },
      host: { type: "string", default: "127.0.0.1" },
      "client-id": { type: "string", default: "gw" },
      "client-secret": { type: "string", default: "s3cret" },
      "redirect-uri": { type: "string", multiple: true, default: [] },
      "post-logout-redirect-uri": { type: "string", multiple: true, default: [] },
      "id-token-alg": { type: "string", default: "RS256" },
      "no-skip-consent": { type: "boolean", default: false },
      "no-require-pkce": { type: "boolean", default: false },
      "access-token-ttl": { type: "string" },
      "id-token-ttl": { type: "string" },
      "refresh-token-ttl": { type: "string" },
      "session-ttl": { type: "string" },
      verbose: { type: "boolean", default: false },
    },
    strict: true,
  });
  const ttl = {};
  for (const [flag, name] of [
    ["access-token-ttl", "AccessToken"],
    ["id-token-ttl", "IdToken"],
    ["refresh-token-ttl", "RefreshToken"],
    ["session-ttl", "Session"],
  ]) {
    if (values[flag] !== undefined) ttl[name] = Number(values[flag]);
  }
  const op = await startProvider({
    port: Number(values.port),
    host: values.host,
    clientId: values["client-id"],
    clientSecret: values["client-secret"],
    redirectUris: values["redirect-uri"],
    postLogoutRedirectUris: values["post-logout-redirect-uri"],
    idTokenSigningAlg: values["id-token-alg"],
    skipConsent: !values["no-skip-consent"],
    requirePkce: !values["no-require-pkce"],
    ttl,
    log: (line) => {
      if (values.verbose || / error|server_error|test hook/.test(line)) process.stderr.write(`[oidc-provider] ${line}\n`);
    },
  });

  let exiting = false;
  const exit = async (why) => {
    if (exiting) return;
    exiting = true;
    if (values.verbose) process.stderr.write(`[oidc-provider] stopping: ${why}\n`);
    await Promise.race([op.close(), new Promise((r) => setTimeout(r, 2_000))]);
    process.exit(0);
  };
  process.on("SIGTERM", () => exit("SIGTERM"));
  process.on("SIGINT", () => exit("SIGINT"));
  // Watch stdin only when it is a pipe or a socket (a parent holding it): /dev/null or a
  // terminal would end it at once, or never.
  let stdinStat = null;
  try {
    stdinStat = fs.fstatSync(0);
  } catch {
    // no stdin at all
  }
  if (stdinStat && (stdinStat.isFIFO() || stdinStat.isSocket())) {
    process.stdin.on("end", () => exit("stdin closed"));
    process.stdin.on("close", () => exit("stdin closed"));
    process.stdin.on("error", () => exit("stdin error"));
    process.stdin.resume();
  }

  process.stdout.write(`${JSON.stringify({ issuer: op.issuer, port: op.port })}\n`);
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    process.stderr.write(`oidc-provider.mjs: ${(e && e.stack) || e}\n`);
    process.exit(2);
  });
}
