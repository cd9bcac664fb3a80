//! `routes`: each route's host, path prefix, methods, upstream and access policy.

use http::Method;

use super::{Ctx, is_clean_path, role_name};
use crate::config::raw::RawRoute;
use crate::config::{
    AuthPolicy, CachePolicy, ConfigError, HostPattern, OnUnauthenticated, RouteSpec, UpstreamTarget,
};

/// `verified_by_default`: `auth.require_verified_email`; `mfa_roles`:
/// `auth.mfa.required_for_roles`.
pub(super) fn validate_route(
    cx: &Ctx,
    i: usize,
    r: &RawRoute,
    verified_by_default: bool,
    mfa_roles: &[String],
) -> Result<RouteSpec, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");

    let host = match &r.host {
        None => None,
        Some(h) => Some(host_pattern(&h.value).ok_or_else(|| {
            cx.err(
                h,
                &key("host"),
                format!(
                    "invalid host {:?} (write app.example.com or *.example.com, no port or scheme)",
                    h.value
                ),
            )
        })?),
    };

    let trimmed = r.path.value.trim_end_matches('/');
    let path = if trimmed.is_empty() && r.path.value.starts_with('/') {
        "/".to_owned()
    } else if is_clean_path(trimmed) && placeholders_ok(trimmed) {
        trimmed.to_owned()
    } else {
        return Err(cx.err(
            &r.path,
            &key("path"),
            format!(
                "invalid path prefix {:?} (must start with /, contain no '..', '//', '%', '?' or spaces, and at most one {{sub}} segment)",
                r.path.value
            ),
        ));
    };

    let methods = match &r.methods {
        None => None,
        Some(list) => {
            let mut out = Vec::new();
            for (j, m) in list.iter().enumerate() {
                let upper = m.value.to_ascii_uppercase();
                let method = Method::from_bytes(upper.as_bytes())
                    .ok()
                    .filter(|_| upper.bytes().all(|b| b.is_ascii_uppercase()))
                    .ok_or_else(|| {
                        cx.err(
                            m,
                            &format!("routes[{i}].methods[{j}]"),
                            format!("invalid method {:?}", m.value),
                        )
                    })?;
                out.push(method);
            }
            if out.is_empty() {
                return Err(cx.err_at(
                    r.path.referenced.line(),
                    &key("methods"),
                    "an empty list matches nothing; leave methods out to match all",
                ));
            }
            Some(out)
        }
    };

    let upstream =
        upstream_target(&r.upstream.value).map_err(|m| cx.err(&r.upstream, &key("upstream"), m))?;

    let roles = match &r.roles {
        None => Vec::new(),
        Some(list) => {
            let mut out = Vec::new();
            for (j, role) in list.iter().enumerate() {
                out.push(role_name(cx, role, &format!("routes[{i}].roles[{j}]"))?);
            }
            out
        }
    };
    let policy = match r.auth.as_ref().map(|a| (a, a.value.as_str())) {
        // Fail closed: a route that does not say is protected.
        None | Some((_, "required")) => AuthPolicy::Required { roles },
        Some((a, "public")) => {
            if !roles.is_empty() {
                return Err(cx.err(
                    a,
                    &key("roles"),
                    "roles need auth: required (a public route admits everyone)",
                ));
            }
            AuthPolicy::Public
        }
        Some((a, other)) => {
            return Err(cx.err(
                a,
                &key("auth"),
                format!("unknown policy {other:?} (use public or required)"),
            ));
        }
    };

    let on_unauthenticated = match &r.on_unauthenticated {
        None => OnUnauthenticated::Auto,
        Some(v) => match v.value.as_str() {
            "auto" => OnUnauthenticated::Auto,
            "redirect" => OnUnauthenticated::Redirect,
            "deny" => OnUnauthenticated::Deny,
            other => {
                return Err(cx.err(
                    v,
                    &key("on_unauthenticated"),
                    format!("unknown value {other:?} (use auto, redirect or deny)"),
                ));
            }
        },
    };
    let public = policy == AuthPolicy::Public;
    if public && path.contains("{sub}") {
        return Err(cx.err(
            &r.path,
            &key("path"),
            "a {sub} segment needs auth: required (it compares the segment with the caller's id)",
        ));
    }
    let require_verified_email = match &r.require_verified_email {
        Some(v) if v.value && public => {
            return Err(cx.err(
                v,
                &key("require_verified_email"),
                "needs auth: required (a public route does not know who the caller is)",
            ));
        }
        Some(v) => v.value,
        None => verified_by_default && !public,
    };
    let require_mfa = match &r.mfa {
        None => false,
        Some(v) => match v.value.as_str() {
            "optional" => false,
            "required" if public => {
                return Err(cx.err(
                    v,
                    &key("mfa"),
                    "needs auth: required (a public route does not know who the caller is)",
                ));
            }
            "required" => true,
            other => {
                return Err(cx.err(
                    v,
                    &key("mfa"),
                    format!("unknown value {other:?} (use required or optional)"),
                ));
            }
        },
    };
    let mut owner_bypass_roles = Vec::new();
    if let Some(list) = &r.owner_bypass_roles {
        for (j, role) in list.iter().enumerate() {
            let k = format!("routes[{i}].owner_bypass_roles[{j}]");
            if !path.contains("{sub}") {
                return Err(cx.err(role, &k, "only meaningful on a path with a {sub} segment"));
            }
            owner_bypass_roles.push(role_name(cx, role, &k)?);
        }
    }
    let assertion_audience = match &r.assertion_audience {
        None => None,
        Some(v) if v.value.trim().is_empty() || v.value.chars().any(char::is_control) => {
            return Err(cx.err(v, &key("assertion_audience"), "must be a non-empty string"));
        }
        Some(v) => Some(v.value.clone()),
    };

    let cache = match &r.cache {
        None => CachePolicy::NoStore,
        Some(v) => match v.value.as_str() {
            "no-store" => CachePolicy::NoStore,
            "private" => CachePolicy::Private,
            "pass" => CachePolicy::Pass,
            other => {
                return Err(cx.err(
                    v,
                    &key("cache"),
                    format!("unknown value {other:?} (use no-store, private or pass)"),
                ));
            }
        },
    };

    Ok(RouteSpec {
        name: r.name.clone().unwrap_or_else(|| path.clone()),
        host,
        path,
        methods,
        upstream,
        strip_prefix: r.strip_prefix,
        policy,
        on_unauthenticated,
        forward_token: r.forward_token,
        require_verified_email,
        require_mfa,
        mfa_for_roles: if public {
            Vec::new()
        } else {
            mfa_roles.to_vec()
        },
        owner_bypass_roles,
        assertion_audience,
        cors: r.cors,
        case_sensitive: r.case_sensitive,
        cache,
    })
}

/// `{sub}` may stand as a whole segment, at most once; no other braces.
fn placeholders_ok(path: &str) -> bool {
    let mut owners = 0;
    for seg in path.split('/') {
        if seg == "{sub}" {
            owners += 1;
        } else if seg.contains('{') || seg.contains('}') {
            return false;
        }
    }
    owners <= 1
}

/// `app.example.com` or `*.example.com`, lowercased; `None` if malformed.
fn host_pattern(text: &str) -> Option<HostPattern> {
    let lower = text.trim().to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid_label = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return None;
    }
    Some(if wild {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

/// `builtin:whoami` or an `http(s)://host[:port][/base]` URL.
fn upstream_target(text: &str) -> Result<UpstreamTarget, String> {
    if let Some(name) = text.strip_prefix("builtin:") {
        return match name {
            "whoami" => Ok(UpstreamTarget::Whoami),
            other => Err(format!("unknown builtin {other:?} (available: whoami)")),
        };
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("invalid URL {text:?}; write it like http://127.0.0.1:3000"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => http::uri::Scheme::HTTP,
        Some("https") => http::uri::Scheme::HTTPS,
        Some(other) => return Err(format!("unsupported scheme {other:?} (use http or https)")),
        None => {
            return Err(format!(
                "{text:?} has no scheme; write it like http://127.0.0.1:3000"
            ));
        }
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err("credentials in upstream URLs are not supported".into());
    }
    if uri.query().is_some() {
        return Err("an upstream URL cannot have a query string".into());
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    if !base_path.is_empty() && !is_clean_path(&base_path) {
        return Err(format!("invalid path in upstream URL {text:?}"));
    }
    Ok(UpstreamTarget::Http {
        scheme,
        authority,
        base_path,
    })
}

#[cfg(test)]
mod tests {
    use http::Method;

    use crate::config::validate::tests::load;
    use crate::config::{AuthPolicy, HostPattern};

    #[test]
    fn bad_scheme_names_key_and_line() {
        let e = load("version: 1\nroutes:\n  - path: /a\n    upstream: builtin:whoami\n  - path: /b\n    upstream: http://x\n  - path: /c\n    upstream: ftp://files\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "test.yaml:8: routes[2].upstream: unsupported scheme \"ftp\" (use http or https)"
        );
    }

    #[test]
    fn routes_are_parsed() {
        let c = load(
            "version: 1\nroutes:\n  - path: /admin/\n    host: '*.Example.com'\n    methods: [get, POST]\n    upstream: https://10.0.0.1:8443/base/\n    auth: required\n    roles: [admin]\n  - path: /\n    upstream: builtin:whoami\n    auth: public\n",
        )
        .unwrap();
        let r = &c.routes[0];
        assert_eq!(r.path, "/admin");
        assert_eq!(r.host, Some(HostPattern::Wildcard(".example.com".into())));
        assert_eq!(r.methods, Some(vec![Method::GET, Method::POST]));
        assert_eq!(r.upstream.to_string(), "https://10.0.0.1:8443/base");
        assert_eq!(
            r.policy,
            AuthPolicy::Required {
                roles: vec!["admin".into()]
            }
        );
        assert_eq!(c.routes[1].path, "/");
        assert_eq!(c.routes[1].policy, AuthPolicy::Public);
    }

    #[test]
    fn routes_fail_closed_by_default() {
        let c = load("version: 1\nroutes:\n  - path: /\n    upstream: builtin:whoami\n").unwrap();
        assert_eq!(c.routes[0].policy, AuthPolicy::Required { roles: vec![] });
    }
}
