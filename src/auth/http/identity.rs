//! What the upstream is told about the user: the identity headers (user id, email, name, roles)
//! and, when configured, a signed identity assertion; and which client-sent headers are stripped
//! first because they could pose as those.

use http::HeaderName;
use http::header::{HeaderMap, HeaderValue};

use super::admission::Session;
use super::api::AuthApi;
use crate::auth::token::{AccessClaims, IDENTITY_HEADERS};
use crate::config::{AssertionSettings, IdentityHeaders};

/// The JWT `typ` of identity assertions; distinct from access tokens so neither passes for the
/// other.
pub const ASSERTION_TYP: &str = "gw-identity+jwt";

/// The identity settings of one configuration, with every header name the gateway sets (stripped
/// from client requests) built once.
pub(super) struct Identity {
    headers: IdentityHeaders,
    /// The identity headers in [`identity_values`]' order, then the assertion's.
    names: Vec<HeaderName>,
    assertion: Option<AssertionSettings>,
}

impl Identity {
    pub(super) fn new(headers: &IdentityHeaders, assertion: Option<&AssertionSettings>) -> Self {
        Identity {
            names: [
                &headers.user_id,
                &headers.email,
                &headers.name,
                &headers.roles,
                &headers.email_verified,
                &headers.mfa,
                &headers.provider,
            ]
            .into_iter()
            .chain(assertion.map(|a| &a.header))
            .cloned()
            .collect(),
            headers: headers.clone(),
            assertion: assertion.cloned(),
        }
    }
}

impl Identity {
    /// The identity headers of `claims` with their values (a value that cannot be one is left
    /// out).
    fn pairs<'a>(
        &'a self,
        claims: &'a AccessClaims,
    ) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
        self.names
            .iter()
            .zip(identity_values(claims))
            .filter_map(|(name, v)| Some((name, v.as_ref()?)))
    }
}

impl AuthApi {
    /// Removes every client-sent identity header (the reserved prefix, the configured names and
    /// the assertion header, which may be named outside the prefix).
    pub(crate) fn strip_identity(&self, headers: &mut HeaderMap) {
        let id = self.identity();
        crate::proxy::headers::strip_identity(headers, &id.headers.prefix, &id.names);
    }

    /// Whether a header, named as the client spelled it, is one [`AuthApi::strip_identity`]
    /// removes.
    pub(crate) fn is_identity_name(&self, name: &[u8]) -> bool {
        let id = self.identity();
        crate::proxy::headers::is_identity_name(name, &id.headers.prefix, &id.names)
    }

    /// Whether a signed identity assertion is configured (made per request by
    /// [`AuthApi::identify`]).
    pub(crate) fn has_assertion(&self) -> bool {
        self.identity().assertion.is_some()
    }

    /// The identity headers [`AuthApi::identify`] sets, as `name: value` lines for an
    /// HTTP/1.1 head (without the assertion: callers check [`AuthApi::has_assertion`]).
    pub(crate) fn identity_lines(&self, claims: &AccessClaims, out: &mut Vec<u8>) {
        for (name, v) in self.identity().pairs(claims) {
            crate::http1::write::header_line(out, name.as_str().as_bytes(), v.as_bytes());
        }
    }

    /// The headers [`AuthApi::identify`] sets (forward-auth copies them into its answer).
    pub(crate) fn identity_header_names(&self) -> Vec<http::HeaderName> {
        self.identity().names.clone()
    }

    /// Tells the upstream who the user is: the identity headers (values without control
    /// characters) and, when configured, a signed assertion for `audience`. Call after
    /// [`AuthApi::strip_identity`], so these are the only copies.
    pub(crate) fn identify(&self, headers: &mut HeaderMap, session: &Session, audience: &str) {
        let c = &session.claims;
        for (name, v) in self.identity().pairs(c) {
            headers.insert(name.clone(), v.clone());
        }
        if let Some(a) = &self.identity().assertion {
            let now = self.service().clock().unix();
            let settings = self.service().settings();
            let claims = serde_json::json!({
                "iss": settings.issuer,
                "aud": audience,
                "sub": c.sub,
                "email": c.email,
                "name": c.name,
                "roles": c.roles,
                "email_verified": c.email_verified,
                "amr": c.amr,
                "sid": c.sid,
                "iat": now,
                "exp": now + a.ttl.as_secs(),
                "jti": uuid::Uuid::new_v4().to_string(),
            });
            match self.service().keys().sign_json(ASSERTION_TYP, &claims) {
                Ok(jwt) => {
                    if let Ok(v) = HeaderValue::from_str(&jwt) {
                        headers.insert(a.header.clone(), v);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot sign the identity assertion"),
            }
        }
    }
}

/// The identity header values of some claims (user id, e-mail, name, roles, whether the
/// address is verified, whether a second factor was used, the identity provider of a federated
/// session), made once per verified token: control characters are dropped, and a value that still cannot be a header
/// value is left out.
fn identity_values(c: &AccessClaims) -> &[Option<HeaderValue>; IDENTITY_HEADERS] {
    c.identity.get_or_init(|| {
        let value = |text: &str| {
            if text.chars().any(char::is_control) {
                let clean: String = text.chars().filter(|ch| !ch.is_control()).collect();
                HeaderValue::from_str(&clean).ok()
            } else {
                HeaderValue::from_str(text).ok()
            }
        };
        [
            value(&c.sub),
            value(&c.email),
            value(c.name.as_deref().unwrap_or("")),
            value(&c.roles.join(",")),
            Some(flag(c.email_verified)),
            Some(flag(c.mfa())),
            // Only for a session signed in at an identity provider.
            c.idp.as_deref().and_then(value),
        ]
    })
}

fn flag(on: bool) -> HeaderValue {
    HeaderValue::from_static(if on { "true" } else { "false" })
}
