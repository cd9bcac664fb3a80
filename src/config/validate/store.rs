//! `store`: which backend (redb or PostgreSQL) and its settings, and the key that encrypts the
//! store's secrets.

use std::time::Duration;

use super::{Ctx, secret_bytes};
use crate::config::raw::RawStore;
use crate::config::{
    ConfigError, MIN_ENCRYPTION_KEY_BYTES, PostgresSettings, StoreSettings, WhenStale,
    is_postgres_url,
};
use crate::secret::{Secret, SecretString};

/// `store.encryption_key` / `store.encryption_key_file`: the key material that encrypts the
/// store's secrets, at least [`MIN_ENCRYPTION_KEY_BYTES`] bytes.
pub(super) fn validate_store_key(
    cx: &Ctx,
    raw: &RawStore,
) -> Result<Option<Secret<Vec<u8>>>, ConfigError> {
    let Some((at, bytes)) = secret_bytes(
        cx,
        (&raw.encryption_key, "store.encryption_key"),
        (&raw.encryption_key_file, "store.encryption_key_file"),
    )?
    else {
        return Ok(None);
    };
    let min = MIN_ENCRYPTION_KEY_BYTES;
    if bytes.len() < min {
        return Err(cx.err(
            at,
            "store.encryption_key",
            format!(
                "the key is {} bytes; use at least {min} random bytes (e.g. `openssl rand \
                 -base64 48`)",
                bytes.len()
            ),
        ));
    }
    Ok(Some(Secret::new(bytes)))
}

pub(super) fn validate_store(cx: &Ctx, raw: &RawStore) -> Result<StoreSettings, ConfigError> {
    match (&raw.redb, &raw.postgres) {
        (Some(_), Some(pg)) => Err(cx.err(
            &pg.url,
            "store",
            "choose one store: redb or postgres, not both",
        )),
        (Some(r), None) => Ok(StoreSettings::Redb {
            path: cx.path(&r.path.value),
        }),
        (None, None) => Ok(StoreSettings::Redb {
            path: cx.path("data/gateway.redb"),
        }),
        (None, Some(pg)) => {
            let url = cx.secret(&pg.url, "store.postgres.url")?;
            if !is_postgres_url(&url) {
                return Err(cx.err(
                    &pg.url,
                    "store.postgres.url",
                    "must start with postgres:// (like postgres://user:password@host:5432/db)",
                ));
            }
            if let Err(e) = url.parse::<tokio_postgres::Config>() {
                // The parser's message can quote the URL, password included: say only what kind
                // of problem it is.
                let kind = if e.to_string().contains("unknown") {
                    "unknown connection option"
                } else {
                    "not a valid connection URL"
                };
                return Err(cx.err(&pg.url, "store.postgres.url", kind));
            }
            let when_stale = match pg.when_stale.as_ref().map(|v| v.value.as_str()) {
                None | Some("refuse") => WhenStale::Refuse,
                Some("accept") => WhenStale::Accept,
                Some(other) => {
                    return Err(cx.err(
                        pg.when_stale.as_ref().unwrap_or(&pg.url),
                        "store.postgres.when_stale",
                        format!("unknown value {other:?} (use refuse or accept)"),
                    ));
                }
            };
            let secs = Duration::from_secs;
            Ok(StoreSettings::Postgres(PostgresSettings {
                url: SecretString::new(url),
                pool_size: cx.number(&pg.pool_size, "store.postgres.pool_size", 16, (1, 1000))?,
                connect_timeout: cx.duration(
                    &pg.connect_timeout,
                    "store.postgres.connect_timeout",
                    secs(5),
                    (Duration::from_millis(100), secs(120)),
                )?,
                query_timeout: cx.duration(
                    &pg.query_timeout,
                    "store.postgres.query_timeout",
                    secs(5),
                    (Duration::from_millis(100), secs(300)),
                )?,
                stale_after: cx.duration(
                    &pg.stale_after,
                    "store.postgres.stale_after",
                    secs(30),
                    (secs(2), secs(86_400)),
                )?,
                when_stale,
                ca_file: pg.ca_file.as_ref().map(|f| cx.path(&f.value)),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::validate::tests::load;
    use crate::config::{StoreSettings, WhenStale};

    #[test]
    fn a_postgres_store_is_parsed_with_defaults_and_its_url_stays_hidden() {
        let c = load(
            "version: 1\nstore:\n  postgres:\n    url: postgres://gw:s3cret-pw@db:5432/app\n    stale_after: 10s\n    when_stale: accept\n    ca_file: ca.pem\n",
        )
        .unwrap();
        let StoreSettings::Postgres(pg) = &c.store else {
            panic!("expected postgres, got {:?}", c.store)
        };
        assert_eq!(pg.pool_size, 16);
        assert_eq!(pg.connect_timeout, Duration::from_secs(5));
        assert_eq!(pg.stale_after, Duration::from_secs(10));
        assert_eq!(pg.when_stale, WhenStale::Accept);
        assert_eq!(pg.ca_file.as_deref(), Some(Path::new("/base/ca.pem")));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the password leaked into Debug"
        );
        assert_eq!(c.store.describe(), "PostgreSQL database app on db:5432");
    }

    #[test]
    fn postgres_store_mistakes_are_named_without_quoting_the_url() {
        for (yaml, key, says) in [
            (
                "store:\n  redb: {path: a.redb}\n  postgres: {url: 'postgres://h/db'}\n",
                "store",
                "not both",
            ),
            (
                "store:\n  postgres: {url: 'mysql://u:s3cret@h/db'}\n",
                "store.postgres.url",
                "must start with postgres://",
            ),
            (
                "store:\n  postgres: {url: 'postgres://u:s3cret@h/db?bogus_option=1'}\n",
                "store.postgres.url",
                "connection",
            ),
            (
                "store:\n  postgres: {url: 'postgres://h/db', when_stale: maybe}\n",
                "store.postgres.when_stale",
                "refuse or accept",
            ),
            (
                "store:\n  postgres: {url: 'postgres://h/db', stale_after: 1s}\n",
                "store.postgres.stale_after",
                "out of range",
            ),
            (
                "store:\n  postgres: {url: 'postgres://h/db', pool_size: 0}\n",
                "store.postgres.pool_size",
                "out of range",
            ),
            (
                "store:\n  postgres: {url: '${NOPE}'}\n",
                "store.postgres.url",
                "NOPE is not set",
            ),
        ] {
            let e = load(&format!("version: 1\n{yaml}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(says), "{yaml}: {e}");
            assert!(
                e.contains("yaml:3:") || e.contains("yaml:4:"),
                "{yaml}: {e}"
            );
            assert!(!e.contains("s3cret"), "{yaml}: the URL leaked: {e}");
        }
    }
}
