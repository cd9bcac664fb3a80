//! The browser client for single-page apps: `GET {prefix}/client.js`, a dependency-free ES module
//! (sign-in, sign-up, sign-out, the current user, and a `fetch` wrapper that adds the CSRF token
//! and refreshes the session once on a 401), and `GET {prefix}/client.d.ts`, its TypeScript
//! declarations. Both are files in `browser_client/` beside this file, compiled into the binary; the module finds the
//! API from its own URL, so it follows `auth.prefix`.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// The ES module.
pub const CLIENT_JS: &str = include_str!("browser_client/client.js");
/// Its TypeScript declarations.
pub const CLIENT_DTS: &str = include_str!("browser_client/client.d.ts");
/// The passkey buttons of the hosted pages (a classic script, not a module).
pub const WEBAUTHN_JS: &str = include_str!("browser_client/webauthn.js");

/// One of the files, by its path under the prefix (`/client.js`, `/client.d.ts`, and
/// `/webauthn.js`, the hosted pages' passkey script).
pub(super) fn asset(action: &str) -> Option<Response<Body>> {
    let (text, content_type) = match action {
        "/client.js" => (CLIENT_JS, "text/javascript; charset=utf-8"),
        "/client.d.ts" => (CLIENT_DTS, "application/typescript; charset=utf-8"),
        "/webauthn.js" => (WEBAUTHN_JS, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    let mut resp = Response::new(body::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if action == "/client.js" {
        // Deno (and tools that follow it) find the types from here.
        h.insert(
            "x-typescript-types",
            HeaderValue::from_static("./client.d.ts"),
        );
    }
    Some(resp)
}
