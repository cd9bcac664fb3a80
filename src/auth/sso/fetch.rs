//! The HTTP client single sign-on talks to providers with: hyper over rustls (the ring provider
//! and the web PKI roots, as the upstream client), handed to `openidconnect` as its
//! [`AsyncHttpClient`], so the crate brings no HTTP stack of its own.
//!
//! Every request has a deadline (the provider's `timeout`), answers are read up to
//! [`MAX_ANSWER_BYTES`], and redirects are not followed (a provider's endpoints are named by its
//! discovery document; following a redirect from one would let it point the gateway anywhere).
//! Plain `http://` is refused except to a loopback address, which the config allows for a
//! provider on the same machine.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

/// The largest answer read from a provider (discovery documents and key sets are a few KiB).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Why a request to a provider failed. Says nothing secret: no body, no credentials.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the provider: {0}")]
    Connect(String),
    #[error("the provider's answer is larger than {MAX_ANSWER_BYTES} bytes or broke off")]
    Body,
    #[error(
        "refused to send a request over plain http to {0} (only loopback providers may use http)"
    )]
    Insecure(String),
    #[error("bad request: {0}")]
    Request(String),
}

/// A client for provider requests. Cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Fetcher {
    /// A client whose requests each get `timeout`.
    pub fn new(timeout: Duration) -> Result<Fetcher, FetchError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| FetchError::Connect(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(https);
        Ok(Fetcher { client, timeout })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("https") {
            let host = uri.host().unwrap_or_default();
            if uri.scheme_str() != Some("http") || !crate::config::is_loopback_host(host) {
                return Err(FetchError::Insecure(host.to_owned()));
            }
        }
        let (parts, body) = request.into_parts();
        let mut req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        if !req.headers().contains_key(http::header::USER_AGENT) {
            req.headers_mut().insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(concat!("gateway/", env!("CARGO_PKG_VERSION"))),
            );
        }
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| FetchError::Connect(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|_| FetchError::Body)?
                .to_bytes();
            Ok(http::Response::from_parts(parts, bytes.to_vec()))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))?
    }
}

/// The error and its sources, for a log line ("connection refused" is in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl<'c> AsyncHttpClient<'c> for Fetcher {
    type Error = FetchError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, FetchError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_goes_only_to_loopback() {
        let f = Fetcher::new(Duration::from_secs(1)).expect("client");
        let req = http::Request::get("http://idp.example.com/.well-known/openid-configuration")
            .body(Vec::new())
            .expect("request");
        assert!(matches!(f.send(req).await, Err(FetchError::Insecure(_))));
    }

    #[tokio::test]
    async fn a_silent_provider_times_out_and_a_big_answer_is_cut() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            // First connection: never answers. Second: an answer larger than the limit.
            let (_silent, _) = listener.accept().await.expect("accept");
            let (mut big, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = big.read(&mut buf).await;
            let n = MAX_ANSWER_BYTES + 10;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
            let _ = big.write_all(head.as_bytes()).await;
            let _ = big.write_all(&vec![b'x'; n]).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let f = Fetcher::new(Duration::from_millis(300)).expect("client");
        let url = format!("http://{addr}/x");
        let req = || {
            http::Request::get(url.as_str())
                .body(Vec::new())
                .expect("request")
        };
        assert!(matches!(f.send(req()).await, Err(FetchError::Timeout(_))));
        let f = Fetcher::new(Duration::from_secs(3)).expect("client");
        assert!(matches!(f.send(req()).await, Err(FetchError::Body)));
    }
}
