//! `gateway healthcheck`: asks the gateway running on this host whether it is alive, for
//! container health checks (distroless images have no curl).
//!
//! The plain HTTP listener is asked (`health.live`), else the HTTPS listener (`health.live` over
//! TLS); the config always has one of the two. The admin listener is not used: it answers from
//! the process's background runtime, so it would pass while the serving threads were stuck.
//!
//! Over HTTPS the certificate is not verified: the probe goes to this host's loopback, sends no
//! credential and reads nothing but a status code, and the certificate is usually issued for a
//! public name (or self-signed), which a check against `127.0.0.1` could not match anyway.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

/// GETs the liveness endpoint of the gateway configured in `path` on the loopback interface.
pub(super) fn run(path: &std::path::Path, timeout: Duration) -> anyhow::Result<()> {
    let config = super::load(path)?;
    let live = config.health.live.as_str();
    let (addr, tls) = match (config.listen.http, config.listen.https) {
        (Some(http), _) => (http, false),
        (None, Some(https)) => (https, true),
        (None, None) => bail!("no listener to check: listen.http and listen.https are both off"),
    };
    let status = probe(addr, live, tls, timeout)?;
    if status != 200 {
        bail!("{live} answered {status}");
    }
    Ok(())
}

/// Sends `GET path` to `addr` (an unspecified address means this host), over TLS when `tls`,
/// and returns the status.
pub(super) fn probe(
    addr: SocketAddr,
    path: &str,
    tls: bool,
    timeout: Duration,
) -> anyhow::Result<u16> {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let target = SocketAddr::new(ip, addr.port());
    let stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| anyhow::anyhow!("cannot connect to {target}: {e}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let status = if tls {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate::new()))
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost")?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
        let mut stream = rustls::StreamOwned::new(conn, stream);
        exchange(&mut stream, path, target)
            .with_context(|| format!("HTTPS health check of {target}"))?
    } else {
        let mut stream = stream;
        exchange(&mut stream, path, target)?
    };
    status.ok_or_else(|| anyhow::anyhow!("{target} did not answer HTTP"))
}

/// Writes the request and reads the status line; `None` if the answer is not HTTP/1.x.
fn exchange(
    stream: &mut (impl Read + Write),
    path: &str,
    target: SocketAddr,
) -> std::io::Result<Option<u16>> {
    // One write: a server may answer and close as soon as it has the request head.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\nUser-Agent: gateway-healthcheck\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    // The status line is all we need; read at most a little more than it.
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            // A TLS peer that closes without close_notify after answering.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !head.is_empty() => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    Ok(crate::http1::head::status_code(&head))
}

/// Accepts the server's certificate whatever it is (see the module comment for why that is
/// fine for this probe), but still checks the handshake signatures, so the TLS itself is real.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    fn new() -> Self {
        AnyCertificate {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
