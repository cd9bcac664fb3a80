//! `upstream`: timeouts and pooling of upstream connections, and which client headers never
//! reach an upstream.

use std::time::Duration;

use super::Ctx;
use crate::config::raw::{RawUpstream, Sp};
use crate::config::{ConfigError, UpstreamSettings};

pub(super) fn validate_upstream(
    cx: &Ctx,
    u: &RawUpstream,
) -> Result<UpstreamSettings, ConfigError> {
    Ok(UpstreamSettings {
        connect_timeout: cx.duration(
            &u.connect_timeout,
            "upstream.connect_timeout",
            Duration::from_secs(5),
            (Duration::from_millis(10), Duration::from_secs(300)),
        )?,
        response_timeout: cx.duration(
            &u.response_timeout,
            "upstream.response_timeout",
            Duration::from_secs(60),
            (Duration::from_millis(10), Duration::from_secs(86_400)),
        )?,
        pool_idle_timeout: cx.duration(
            &u.pool_idle_timeout,
            "upstream.pool_idle_timeout",
            Duration::from_secs(90),
            (Duration::from_secs(1), Duration::from_secs(3600)),
        )?,
        pool_max_idle_per_host: u.pool_max_idle_per_host.unwrap_or(256),
        strip_request_headers: strip_request_headers(cx, &u.strip_request_headers)?,
        builtin_client: u.builtin_client.unwrap_or(true),
    })
}

/// Headers `upstream.strip_request_headers` removes unless set: other client-address headers
/// (upstreams take the client's address from them) and URL-rewrite headers (some frameworks
/// route on them, past the path the gateway authorised).
pub const STRIP_REQUEST_HEADERS: [&str; 5] = [
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "x-original-url",
    "x-rewrite-url",
];

/// `upstream.strip_request_headers`: valid header names, as lowercase `-` spellings. Headers
/// the gateway already owns (the forwarding headers, `X-Real-IP`, `X-Request-Id`) or that frame
/// the message cannot be listed.
fn strip_request_headers(
    cx: &Ctx,
    list: &Option<Vec<Sp<String>>>,
) -> Result<Vec<String>, ConfigError> {
    let Some(list) = list else {
        return Ok(STRIP_REQUEST_HEADERS.map(str::to_owned).to_vec());
    };
    // What the gateway sets, and the names that frame or route the request itself.
    let framing = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
    ];
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let key = format!("upstream.strip_request_headers[{i}]");
        let name = http::HeaderName::from_bytes(v.value.trim().as_bytes())
            .map_err(|_| cx.err(v, &key, format!("invalid header name {:?}", v.value)))?;
        let name = name.as_str().replace('_', "-");
        if crate::config::GATEWAY_SET.contains(&name.as_str()) || framing.contains(&name.as_str()) {
            return Err(cx.err(
                v,
                &key,
                format!("{name} is set or checked by the gateway itself and cannot be listed here"),
            ));
        }
        out.push(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::STRIP_REQUEST_HEADERS;
    use crate::config::validate::tests::load;

    #[test]
    fn strip_request_headers_default_and_checks() {
        let c = load("version: 1\n").unwrap();
        assert_eq!(
            c.upstream.strip_request_headers,
            STRIP_REQUEST_HEADERS.map(str::to_owned)
        );
        let c = load("version: 1\nupstream:\n  strip_request_headers: [X_Custom_IP, []]\n");
        assert!(c.is_err());
        let c = load("version: 1\nupstream:\n  strip_request_headers: [X_Custom_IP]\n").unwrap();
        assert_eq!(c.upstream.strip_request_headers, ["x-custom-ip"]);
        let c = load("version: 1\nupstream:\n  strip_request_headers: []\n").unwrap();
        assert!(c.upstream.strip_request_headers.is_empty());
        let e = load("version: 1\nupstream:\n  strip_request_headers: [X-Real-IP]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "test.yaml:3: upstream.strip_request_headers[0]: x-real-ip is set or checked by the gateway itself and cannot be listed here"
        );
        let e = load("version: 1\nupstream:\n  strip_request_headers: ['bad name']\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid header name"), "{e}");
        // Every header the gateway sets, in any spelling, is refused.
        for name in crate::config::GATEWAY_SET {
            let spelled = name.to_uppercase().replace('-', "_");
            let yaml = format!("version: 1\nupstream:\n  strip_request_headers: [{spelled}]\n");
            let e = load(&yaml).unwrap_err().to_string();
            assert!(
                e.contains("set or checked by the gateway itself"),
                "{name}: {e}"
            );
        }
    }
}
