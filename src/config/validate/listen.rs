//! `listen` and `tls`: the listening addresses, the worker count and the certificate.

use std::net::SocketAddr;
use std::time::Duration;

use super::Ctx;
use crate::config::raw::{RawConfig, Sp};
use crate::config::units;
use crate::config::{ConfigError, Listen, TlsSettings};

pub(super) fn validate_listen(cx: &Ctx, raw: &RawConfig) -> Result<Listen, ConfigError> {
    let addr = |v: &Option<Sp<String>>, key: &str| -> Result<Option<SocketAddr>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) => s.value.parse::<SocketAddr>().map(Some).map_err(|_| {
                cx.err(
                    s,
                    key,
                    format!(
                        "invalid address {:?}; write it like 127.0.0.1:8080 or [::]:8443",
                        s.value
                    ),
                )
            }),
        }
    };
    let http = addr(&raw.listen.http, "listen.http")?;
    let https = addr(&raw.listen.https, "listen.https")?;
    let admin = addr(&raw.admin.listen, "admin.listen")?;
    if http.is_none() && https.is_none() {
        return Err(cx.err(
            &raw.version,
            "listen",
            "no listener: set listen.http, listen.https or both",
        ));
    }
    if raw.listen.redirect_http_to_https && (https.is_none() || http.is_none()) {
        return Err(cx.err(
            &raw.version,
            "listen.redirect_http_to_https",
            "needs both listen.http and listen.https",
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match &raw.listen.workers {
        None => cores,
        Some(w) => match &w.value {
            units::CountText::Text(t) if t == "auto" => cores,
            units::CountText::Count(n) if (1..=256).contains(n) => {
                usize::try_from(*n).unwrap_or(cores)
            }
            other => {
                return Err(cx.err(
                    w,
                    "listen.workers",
                    format!(
                        "{} is not a worker count (use auto, or 1 to 256)",
                        match other {
                            units::CountText::Count(n) => n.to_string(),
                            units::CountText::Text(t) => format!("{t:?}"),
                        }
                    ),
                ));
            }
        },
    };
    Ok(Listen {
        http,
        https,
        admin,
        redirect_http_to_https: raw.listen.redirect_http_to_https,
        workers,
        fast_path: raw.listen.fast_path,
    })
}

pub(super) fn validate_tls(cx: &Ctx, raw: &RawConfig) -> Result<TlsSettings, ConfigError> {
    let t = &raw.tls;
    let explicit = t.cert.is_some() || t.key.is_some();
    if t.cert.is_some() != t.key.is_some() {
        let at = t.cert.as_ref().or(t.key.as_ref());
        if let Some(at) = at {
            return Err(cx.err(at, "tls", "set both tls.cert and tls.key, or neither"));
        }
    }
    let self_signed = t.self_signed.unwrap_or(!explicit);
    let default_hsts = if self_signed {
        // HSTS on a self-signed localhost certificate would pin every localhost port to HTTPS in
        // the developer's browser; only send it for real certificates unless asked.
        None
    } else {
        Some(Duration::from_secs(365 * 86_400))
    };
    let hsts_max_age = match &t.hsts_max_age {
        None => default_hsts,
        Some(v) => {
            let d =
                units::parse_duration(&v.value).map_err(|m| cx.err(v, "tls.hsts_max_age", m))?;
            (!d.is_zero()).then_some(d)
        }
    };
    Ok(TlsSettings {
        cert: cx.path(t.cert.as_ref().map_or("certs/localhost.pem", |c| &c.value)),
        key: cx.path(
            t.key
                .as_ref()
                .map_or("certs/localhost-key.pem", |k| &k.value),
        ),
        self_signed,
        hsts_max_age,
    })
}
