// Passkeys on the gateway's hosted pages: `GET {prefix}/webauthn.js`, loaded by the pages
// that offer one (sign-in, the second step of a sign-in, the two-factor page). No inline
// script, no dependency: each button says what it does in data attributes, and this file
// talks to the JSON endpoints under the prefix it was loaded from.
//
//   data-passkey="sign-in"   data-next             sign in without a password
//   data-passkey="login"     data-mfa-token, data-next   the second step of a sign-in
//   data-passkey="register"  data-csrf, data-next, data-name-field   add a passkey
//   data-passkey="verify"    data-csrf, data-next  step up this session
//
// Errors go to the element with id "passkey-error".
(() => {
  "use strict";
  const script = document.currentScript;
  const prefix = new URL(script.src).pathname.replace(/\/webauthn\.js$/, "");

  const b64 = {
    decode(text) {
      const base = text.replace(/-/g, "+").replace(/_/g, "/");
      const padded = base + "=".repeat((4 - (base.length % 4)) % 4);
      return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)).buffer;
    },
    encode(buffer) {
      let text = "";
      for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
      return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    },
  };

  function creationOptions(options) {
    const pk = options.publicKey;
    pk.challenge = b64.decode(pk.challenge);
    pk.user.id = b64.decode(pk.user.id);
    for (const c of pk.excludeCredentials || []) c.id = b64.decode(c.id);
    return { publicKey: pk };
  }

  function requestOptions(options) {
    const pk = options.publicKey;
    pk.challenge = b64.decode(pk.challenge);
    for (const c of pk.allowCredentials || []) c.id = b64.decode(c.id);
    return { publicKey: pk };
  }

  function credentialJson(cred) {
    const r = cred.response;
    const response = { clientDataJSON: b64.encode(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = b64.encode(r.attestationObject);
      if (r.getTransports) response.transports = r.getTransports();
    } else {
      response.authenticatorData = b64.encode(r.authenticatorData);
      response.signature = b64.encode(r.signature);
      if (r.userHandle) response.userHandle = b64.encode(r.userHandle);
    }
    return {
      id: cred.id,
      rawId: b64.encode(cred.rawId),
      type: cred.type,
      extensions: cred.getClientExtensionResults(),
      response,
    };
  }

  async function call(path, body, csrf) {
    const headers = { "content-type": "application/json" };
    if (csrf) headers["x-csrf-token"] = csrf;
    const resp = await fetch(prefix + path, {
      method: "POST",
      headers,
      credentials: "same-origin",
      body: JSON.stringify(body || {}),
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(data.detail || "The request failed (" + resp.status + ")");
    return data;
  }

  function go(next) {
    window.location.assign(next && next.startsWith("/") && !next.startsWith("//") ? next : "/");
  }

  function showCodes(codes, next) {
    const list = document.getElementById("passkey-codes");
    if (!list) return go(next);
    list.hidden = false;
    const ul = list.querySelector("ul");
    for (const code of codes) {
      const li = document.createElement("li");
      const el = document.createElement("code");
      el.textContent = code;
      li.appendChild(el);
      ul.appendChild(li);
    }
  }

  const actions = {
    async "sign-in"(el) {
      const started = await call("/passkey/start");
      const state = started.state;
      const cred = await navigator.credentials.get(requestOptions(started));
      await call("/passkey/finish", { state, credential: credentialJson(cred) });
      go(el.dataset.next);
    },
    async login(el) {
      const mfa_token = el.dataset.mfaToken;
      const started = await call("/login/webauthn", { mfa_token });
      const cred = await navigator.credentials.get(requestOptions(started));
      await call("/login/mfa", { mfa_token, state: started.state, credential: credentialJson(cred) });
      go(el.dataset.next);
    },
    async register(el) {
      const csrf = el.dataset.csrf;
      const started = await call("/mfa/webauthn/register/start", {}, csrf);
      const cred = await navigator.credentials.create(creationOptions(started));
      const field = el.dataset.nameField && document.getElementById(el.dataset.nameField);
      const name = field ? field.value : "";
      const added = await call(
        "/mfa/webauthn/register/finish",
        { state: started.state, credential: credentialJson(cred), name },
        csrf,
      );
      if (added.recovery_codes) showCodes(added.recovery_codes, el.dataset.next);
      else window.location.reload();
    },
    async verify(el) {
      const csrf = el.dataset.csrf;
      const started = await call("/mfa/webauthn/challenge", {}, csrf);
      const cred = await navigator.credentials.get(requestOptions(started));
      await call("/mfa/verify", { state: started.state, credential: credentialJson(cred) }, csrf);
      go(el.dataset.next);
    },
  };

  function wire() {
    const error = document.getElementById("passkey-error");
    for (const el of document.querySelectorAll("[data-passkey]")) {
      // A page with two buttons loads this script twice: each button is wired once, or one
      // click would start two ceremonies.
      if (el.dataset.passkeyWired) continue;
      el.dataset.passkeyWired = "1";
      const action = actions[el.dataset.passkey];
      if (!action || !window.PublicKeyCredential) {
        el.hidden = true;
        continue;
      }
      el.hidden = false;
      el.addEventListener("click", async (event) => {
        event.preventDefault();
        if (error) error.hidden = true;
        el.disabled = true;
        try {
          await action(el);
        } catch (e) {
          if (error) {
            error.textContent = e && e.message ? e.message : String(e);
            error.hidden = false;
          }
        } finally {
          el.disabled = false;
        }
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
  else wire();
})();
