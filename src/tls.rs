//! TLS for the HTTPS listener: certificate loading, dev certificate generation, rustls setup.
//!
//! TLS 1.2 and 1.3 only (rustls offers nothing older), ALPN `h2` then `http/1.1`. When the
//! configured certificate files are missing and `tls.self_signed` is on (the default when no
//! certificate is configured), a self-signed `localhost` certificate is generated with rcgen and
//! written next to the config, private key mode 0600, and the log says so.
//!
//! The certificate sits behind a [`CertStore`] (a rustls certificate resolver over an
//! `ArcSwap`), so a reload swaps it for new handshakes without touching open connections.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsSettings;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {message}")]
    Cert { path: String, message: String },
    #[error("cannot read private key {path}: {message}")]
    Key { path: String, message: String },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("certificate and key do not work together: {0}")]
    Config(String),
}

/// The certificate in use, swappable at run time.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertStore {
    /// Loads (or, in dev mode, generates) the configured certificate.
    pub fn load(settings: &TlsSettings) -> Result<Arc<CertStore>, TlsError> {
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(certified_key(settings)?),
        }))
    }

    /// Replaces the certificate with the one the settings name now; on error the old one stays.
    pub fn reload(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        self.current.store(Arc::new(certified_key(settings)?));
        Ok(())
    }

    /// The serving certificate's `notAfter`, unix seconds (for the expiry metric).
    pub fn not_after(&self) -> Option<i64> {
        let ck = self.current.load();
        ck.cert.first().and_then(|c| not_after(c.as_ref()))
    }

    /// A rustls server configuration that asks this store for its certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(settings: &TlsSettings) -> Result<CertifiedKey, TlsError> {
    if settings.self_signed && !settings.cert.exists() && !settings.key.exists() {
        generate_self_signed(&settings.cert, &settings.key)?;
        tracing::warn!(
            cert = %settings.cert.display(),
            "generated a self-signed certificate for localhost (development only; browsers will warn)"
        );
    }
    let certs = load_certs(&settings.cert)?;
    let key = load_key(&settings.key)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Config(e.to_string()))
}

/// Builds the rustls server configuration, generating a dev certificate first if needed.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    CertStore::load(settings)?.server_config()
}

/// Reads `notAfter` from a DER certificate (RFC 5280: Certificate -> tbsCertificate ->
/// [version], serialNumber, signature, issuer, validity). `None` if the encoding is not what it
/// should be; never panics on bad input.
pub fn not_after(der: &[u8]) -> Option<i64> {
    /// One TLV: (tag, contents, rest).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *b.first()?;
        let first = *b.get(1)?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | usize::from(*b.get(2 + i)?);
            }
            (len, 2 + n)
        };
        let body = b.get(header..header.checked_add(len)?)?;
        let rest = b.get(header + len..)?;
        Some((tag, body, rest))
    }
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let (tag, _, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        // Explicit version; the serial number follows.
        rest = tlv(rest)?.2;
    }
    let rest = tlv(rest)?.2; // signature algorithm
    let rest = tlv(rest)?.2; // issuer
    let (_, validity, _) = tlv(rest)?;
    let (_, _not_before, after) = tlv(validity)?;
    let (tag, time, _) = tlv(after)?;
    let text = std::str::from_utf8(time).ok()?;
    // UTCTime YYMMDDHHMMSSZ or GeneralizedTime YYYYMMDDHHMMSSZ.
    let full = match tag {
        0x17 => {
            let yy: i64 = text.get(0..2)?.parse().ok()?;
            let century = if yy >= 50 { "19" } else { "20" };
            format!("{century}{text}")
        }
        0x18 => text.to_owned(),
        _ => return None,
    };
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        full.get(0..4)?,
        full.get(4..6)?,
        full.get(6..8)?,
        full.get(8..10)?,
        full.get(10..12)?,
        full.get(12..14)?
    );
    let t = humantime::parse_rfc3339(&iso).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

/// A server config from PEM bytes (tests use this with rcgen certificates).
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert {
            path: "(memory)".into(),
            message: e.to_string(),
        })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: "(memory)".into(),
        message: e.to_string(),
    })?;
    build(certs, key)
}

fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Cert {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate found in the file".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // Whoever reads the key can impersonate the gateway; refuse one that other users can read.
    crate::private_file::check(path, "TLS key", crate::private_file::Rule::KeyFile).map_err(
        |e| TlsError::Key {
            path: path.display().to_string(),
            message: e.to_string(),
        },
    )?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`: (cert PEM, key PEM).
pub fn self_signed_pem() -> Result<(String, String), TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let cert =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((cert.cert.pem(), cert.signing_key.serialize_pem()))
}

fn generate_self_signed(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let (cert, key) = self_signed_pem()?;
    for p in [cert_path, key_path] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| TlsError::Generate(format!("{}: {e}", dir.display())))?;
        }
    }
    write_private(key_path, key.as_bytes())
        .map_err(|e| TlsError::Generate(format!("{}: {e}", key_path.display())))?;
    std::fs::write(cert_path, cert)
        .map_err(|e| TlsError::Generate(format!("{}: {e}", cert_path.display())))?;
    Ok(())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_and_loads_a_dev_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let settings = TlsSettings {
            cert: dir.path().join("certs/localhost.pem"),
            key: dir.path().join("certs/localhost-key.pem"),
            self_signed: true,
            hsts_max_age: None,
        };
        let cfg = server_config(&settings).unwrap();
        assert_eq!(cfg.alpn_protocols[0], b"h2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&settings.key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "private key must not be group/world readable"
            );
        }
        // A second start reuses the files.
        server_config(&settings).unwrap();
        // rcgen's default validity runs to 4096-01-01.
        let store = CertStore::load(&settings).unwrap();
        let expiry = store.not_after().unwrap();
        assert!(expiry > 4_000_000_000, "{expiry}");
    }

    #[test]
    fn not_after_never_panics_on_garbage() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x03, 0x30, 0x01],
        ] {
            assert_eq!(not_after(bad), None);
        }
    }

    #[test]
    fn missing_files_without_self_signed_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let settings = TlsSettings {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("nope-key.pem"),
            self_signed: false,
            hsts_max_age: None,
        };
        let e = server_config(&settings).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");
    }
}
