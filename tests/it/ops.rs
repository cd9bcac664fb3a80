//! Operations: metrics, request ids, live reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::util::*;

fn metric(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(gw: &Gateway) -> String {
    let r = get(&format!("http://{}/metrics", gw.admin)).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    r.text()
}

#[tokio::test]
async fn metrics_appear_and_move_after_real_traffic() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!(
            "routes:\n  - {{name: pub, path: /public, upstream: '{u}', auth: public}}\n  - {{name: app, path: /, upstream: '{u}', auth: required}}\n",
            u = up.url()
        ),
    ))
    .await;
    let before = scrape(&gw).await;
    assert_eq!(
        metric(
            &before,
            "gateway_requests_total{route=\"pub\",class=\"2xx\"}"
        ),
        Some(0.0)
    );

    assert_eq!(get(&gw.url("/public/x")).await.unwrap().status, 200);
    assert_eq!(get(&gw.url("/public/y")).await.unwrap().status, 200);
    assert_eq!(get(&gw.url("/private")).await.unwrap().status, 401);
    let s = signup(&gw, "metrics@example.com", "correct horse battery").await;
    let r = send(
        req("GET", &gw.url("/private"))
            .header("authorization", format!("Bearer {}", s.access))
            .body(Default::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let bad = post_json(
        &gw.url("/api/auth/login"),
        &serde_json::json!({"email": "metrics@example.com", "password": "wrong password!"}),
        &[],
    )
    .await;
    assert_eq!(bad.status, 401);

    let after = scrape(&gw).await;
    let m = |p: &str| metric(&after, p).unwrap_or_else(|| panic!("{p} missing in\n{after}"));
    assert_eq!(
        m("gateway_requests_total{route=\"pub\",class=\"2xx\"}"),
        2.0
    );
    assert_eq!(
        m("gateway_requests_total{route=\"app\",class=\"4xx\"}"),
        1.0
    );
    assert_eq!(
        m("gateway_requests_total{route=\"app\",class=\"2xx\"}"),
        1.0
    );
    assert_eq!(m("gateway_auth_outcomes_total{outcome=\"missing\"}"), 1.0);
    assert_eq!(m("gateway_auth_outcomes_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(m("gateway_logins_total{result=\"failed\"}"), 1.0);
    assert!(m("gateway_hashing_completed_total") >= 2.0);
    assert!(m("gateway_upstream_duration_seconds_count{route=\"pub\"}") >= 2.0);
    assert!(m("gateway_open_connections") >= 0.0);
    assert!(m("gateway_certificate_expiry_timestamp_seconds") > 1.0e9);
    assert!(after.contains("gateway_config_reloads_total{result=\"ok\"} 0"));
    assert!(after.contains("gateway_rate_limit_tracked_keys"));
    // A redb store is polled every second: its feed is never old.
    assert!(m("gateway_store_sync_age_seconds") <= 2.0);
}

#[tokio::test]
async fn every_response_has_a_request_id_that_the_upstream_sees_too() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "routes:\n  - {{path: /, upstream: '{}', auth: public}}\n",
        up.url()
    ))
    .await;
    let r = send(
        req("GET", &gw.url("/a"))
            .header("x-request-id", "client-chosen")
            .body(Default::default())
            .unwrap(),
    )
    .await
    .unwrap();
    let id = r.header("x-request-id").unwrap();
    // An untrusted client does not choose its request id.
    assert_ne!(id, "client-chosen");
    assert_eq!(up.last().get("x-request-id").as_deref(), Some(id.as_str()));
    let other = get(&gw.url("/b")).await.unwrap();
    assert_ne!(other.header("x-request-id").unwrap(), id);
    // Errors answered by the gateway carry one too.
    let gw404 = Gateway::start("routes: []\n").await;
    assert!(
        get(&gw404.url("/nothing"))
            .await
            .unwrap()
            .header("x-request-id")
            .is_some()
    );

    // From a trusted proxy, a sane id is kept.
    let trusted = Gateway::start(&format!(
        "trusted_proxies: [127.0.0.1]\nroutes:\n  - {{path: /, upstream: '{}', auth: public}}\n",
        up.url()
    ))
    .await;
    let r = send(
        req("GET", &trusted.url("/c"))
            .header("x-request-id", "lb-1234")
            .body(Default::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.header("x-request-id").as_deref(), Some("lb-1234"));
    assert_eq!(up.last().get("x-request-id").as_deref(), Some("lb-1234"));
}

fn one_route(upstream: &str) -> String {
    format!("routes:\n  - {{path: /, upstream: '{upstream}', auth: public}}\n")
}

#[tokio::test]
async fn reload_swaps_routes_under_load_without_failed_requests() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let gw = Arc::new(Gateway::start(&one_route(&a.url())).await);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (gw, stop, failures, done) = (gw.clone(), stop.clone(), failures.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(&gw.url("/load")).await {
                    Ok(r) if r.status == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    wait_until("some traffic before the reload", || {
        done.load(Ordering::Relaxed) >= 50
    })
    .await;
    gw.reload(&one_route(&b.url())).await.unwrap();
    let at_reload = done.load(Ordering::Relaxed);
    wait_until("traffic after the reload", || {
        done.load(Ordering::Relaxed) >= at_reload + 50 && b.count() > 0
    })
    .await;

    // A broken config is refused and the current one keeps serving.
    let err = gw
        .reload("routes:\n  - {path: /, upstream: 'ftp://nope'}\n")
        .await
        .unwrap_err();
    assert!(err.contains("routes[0].upstream"), "{err}");
    let b_before = b.count();
    wait_until("traffic after the refused reload", || {
        b.count() >= b_before + 20
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    let a_count = a.count();
    assert!(a_count > 0);
    // After the swap, everything new went to B.
    assert_eq!(get(&gw.url("/after")).await.unwrap().status, 200);
    assert_eq!(b.last().uri, "/after");
    assert_eq!(a.count(), a_count);

    let text = scrape(&gw).await;
    assert_eq!(
        metric(&text, "gateway_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_websocket_survives_a_reload() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let gw = Gateway::start(&one_route(&up.url())).await;
    let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", gw.http), tcp)
        .await
        .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));
    gw.reload(&one_route(&other.url())).await.unwrap();
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));
}
