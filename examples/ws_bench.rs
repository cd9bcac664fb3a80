//! WebSocket echo load for `scripts/bench.sh ws` (the performance issue's WebSocket row): an echo
//! server, and a client that keeps one message in flight per connection and reports messages/s
//! and the p99 round trip. The same client runs against the echo server directly and through the
//! gateway, so the difference is the gateway's tunnel.
//!
//! ```text
//! ws_bench echo ADDR                                  echo every message back (2 threads)
//! ws_bench load URL CONNS SECS SIZE ['Name: value']...  prints "MESSAGES_PER_S P99_US"
//! ```
//!
//! The load side runs on one thread, like `wrk -t1`, so it takes the same share of the 2-core
//! machine in both runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("echo") if args.len() == 3 => echo(&args[2]),
        Some("load") if args.len() >= 6 => load(&args[2..]),
        _ => {
            eprintln!(
                "usage: ws_bench echo ADDR | ws_bench load URL CONNS SECS SIZE ['Name: value']..."
            );
            std::process::exit(2);
        }
    }
}

fn echo(addr: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await.unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_binary() || msg.is_text()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn load(args: &[String]) {
    let url = args[0].clone();
    let conns: usize = args[1].parse().expect("CONNS is a number");
    let secs: u64 = args[2].parse().expect("SECS is a number");
    let size: usize = args[3].parse().expect("SIZE is a number");
    let headers: Vec<(HeaderName, HeaderValue)> = args[4..]
        .iter()
        .map(|h| {
            let (name, value) = h.split_once(':').expect("a header is 'Name: value'");
            (
                HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
                HeaderValue::from_str(value.trim()).expect("header value"),
            )
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (count, mut latencies) = rt.block_on(async move {
        let addr = {
            let u: tokio_tungstenite::tungstenite::http::Uri = url.parse().expect("URL");
            format!("{}:{}", u.host().unwrap(), u.port_u16().unwrap_or(80))
        };
        // Every connection is open before the clock starts.
        let mut sockets = Vec::with_capacity(conns);
        for _ in 0..conns {
            let mut request = url.as_str().into_client_request().unwrap();
            request.headers_mut().extend(headers.iter().cloned());
            let tcp = TcpStream::connect(&addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let (ws, _) = tokio_tungstenite::client_async(request, tcp)
                .await
                .expect("WebSocket handshake");
            sockets.push(ws);
        }
        let payload = bytes::Bytes::from(vec![b'x'; size]);
        let end = Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = sockets
            .into_iter()
            .map(|mut ws| {
                let payload = payload.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(1 << 16);
                    while Instant::now() < end {
                        let sent = Instant::now();
                        ws.send(Message::Binary(payload.clone())).await.unwrap();
                        match ws.next().await {
                            Some(Ok(m)) if m.len() == payload.len() => {}
                            other => panic!("unexpected echo: {other:?}"),
                        }
                        latencies.push(sent.elapsed().as_micros() as u32);
                    }
                    let _ = ws.close(None).await;
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        (all.len(), all)
    });
    latencies.sort_unstable();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    println!("{:.0} {p99}", count as f64 / secs as f64);
}
