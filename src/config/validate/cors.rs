//! `cors`: the origins, headers and preflight lifetime of cross-origin requests.

use std::time::Duration;

use super::{Ctx, header_name};
use crate::config::raw::RawConfig;
use crate::config::{ConfigError, CorsSettings};

pub(super) fn validate_cors(cx: &Ctx, raw: &RawConfig) -> Result<CorsSettings, ConfigError> {
    let c = &raw.cors;
    let mut allowed_origins = Vec::new();
    for (i, o) in c.allowed_origins.iter().enumerate() {
        let key = format!("cors.allowed_origins[{i}]");
        let v = o.value.trim_end_matches('/');
        if v == "*" {
            if c.allow_credentials {
                return Err(cx.err(
                    o,
                    &key,
                    "\"*\" cannot be combined with allow_credentials: true; list the origins",
                ));
            }
            allowed_origins.push("*".to_owned());
            continue;
        }
        let uri: http::Uri = v
            .parse()
            .map_err(|_| cx.err(o, &key, format!("invalid origin {:?}", o.value)))?;
        let ok = matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some()
            && uri
                .path_and_query()
                .is_none_or(|pq| pq.as_str() == "/" || pq.as_str().is_empty());
        if !ok {
            return Err(cx.err(
                o,
                &key,
                format!(
                    "invalid origin {:?}; write it like https://app.example.com",
                    o.value
                ),
            ));
        }
        allowed_origins.push(v.to_ascii_lowercase());
    }
    let mut allowed_headers = Vec::new();
    for (i, h) in c.allowed_headers.iter().enumerate() {
        let name = header_name(cx, h, &format!("cors.allowed_headers[{i}]"))?;
        allowed_headers.push(name.as_str().to_owned());
    }
    Ok(CorsSettings {
        allowed_origins,
        allow_credentials: c.allow_credentials,
        allowed_headers,
        max_age: cx.duration(
            &c.max_age,
            "cors.max_age",
            Duration::from_secs(600),
            (Duration::ZERO, Duration::from_secs(86_400)),
        )?,
    })
}
