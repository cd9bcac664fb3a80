//! TLS for the HTTPS listener: certificate loading, dev certificate generation, rustls setup.
//!
//! TLS 1.2 and 1.3 only (rustls offers nothing older), ALPN `h2` then `http/1.1`. When the
//! configured certificate files are missing and `tls.self_signed` is on (the default when no
//! certificate is configured), a self-signed `localhost` certificate is generated with rcgen and
//! written next to the config, private key mode 0600, and the log says so.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// Builds the rustls server configuration, generating a dev certificate first if needed.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    if settings.self_signed && !settings.cert.exists() && !settings.key.exists() {
        generate_self_signed(&settings.cert, &settings.key)?;
        tracing::warn!(
            cert = %settings.cert.display(),
            "generated a self-signed certificate for localhost (development only; browsers will warn)"
        );
    }
    let certs = load_certs(&settings.cert)?;
    let key = load_key(&settings.key)?;
    build(certs, key)
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
