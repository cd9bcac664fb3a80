//! The reference side of the differential targets: hyper's HTTP/1.1 client and server, fed the
//! same bytes over an in-memory pipe.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
}

/// A response as hyper's client read it.
#[derive(Debug)]
pub struct HyperResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// What hyper's client makes of `bytes` sent by a server in answer to a GET (or HEAD), the
/// server closing the connection after them.
pub fn response(bytes: &[u8], head: bool) -> Result<HyperResponse, String> {
    RT.with(|rt| {
        rt.block_on(async {
            let (client_io, mut server_io) = tokio::io::duplex(1 << 20);
            let bytes = bytes.to_vec();
            let server = tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = server_io.read(&mut buf).await;
                let _ = server_io.write_all(&bytes).await;
                let _ = server_io.shutdown().await;
                server_io
            });
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
                .await
                .map_err(|e| e.to_string())?;
            let conn = tokio::spawn(conn);
            let req = http::Request::builder()
                .method(if head { "HEAD" } else { "GET" })
                .uri("/")
                .header("host", "upstream")
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let out = async {
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                let (parts, body) = resp.into_parts();
                let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
                Ok(HyperResponse {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body: body.to_vec(),
                })
            }
            .await;
            conn.abort();
            server.abort();
            out
        })
    })
}

/// A request as hyper's server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HyperRequest {
    pub method: String,
    pub target: String,
    /// Lower-case names with their values, sorted.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body_len: usize,
}

/// The requests hyper's server reads from `bytes` (the client then closing its side), and
/// whether it refused something (answered other than 200).
pub fn requests(bytes: &[u8], max_headers: usize) -> (Vec<HyperRequest>, bool) {
    RT.with(|rt| {
        rt.block_on(async {
            let (mut client_io, server_io) = tokio::io::duplex(1 << 20);
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = seen.clone();
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let record = record.clone();
                async move {
                    let method = req.method().to_string();
                    let target = req.uri().to_string();
                    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = req
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                        .collect();
                    headers.sort();
                    let body_len = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes().len(),
                        Err(_) => usize::MAX,
                    };
                    if let Ok(mut s) = record.lock() {
                        s.push(HyperRequest {
                            method,
                            target,
                            headers,
                            body_len,
                        });
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new()))
                }
            });
            let server = tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .max_headers(max_headers)
                    .max_buf_size(64 * 1024)
                    .half_close(true)
                    .serve_connection(TokioIo::new(server_io), service),
            );
            let _ = client_io.write_all(bytes).await;
            let _ = client_io.shutdown().await;
            let mut out = Vec::new();
            let _ = client_io.read_to_end(&mut out).await;
            let _ = server.await;
            let refused = out
                .windows(9)
                .enumerate()
                .any(|(i, w)| w == b"HTTP/1.1 " && out.get(i + 9..i + 12) != Some(b"200"));
            let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
            (seen, refused)
        })
    })
}
