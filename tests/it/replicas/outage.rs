//! The database goes away under running replicas: tokens keep working and logins answer 503;
//! past `stale_after` replicas fail closed (or keep accepting, when configured), and they
//! recover when it is back.

use super::*;

/// How many replicas are `LISTEN`ing for changes right now.
async fn listeners(url: &str) -> i64 {
    db(url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query = 'LISTEN gateway_changes'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn replicas_ride_out_a_database_restart() {
    let opts = Opts {
        store: SHORT_TIMEOUTS,
        ..Opts::default()
    };
    let Some(mut r) = Replicas::start(2, opts).await else {
        return;
    };
    let token = signup(r.a(), "ada@example.com", PW).await;
    assert_eq!(listeners(&r.url).await, 2, "each replica listens");

    r.pg.stop_async().await;
    // Tokens are checked in memory: proxied requests keep working on both replicas.
    for round in 0..8 {
        for (i, gw) in r.gws.iter().enumerate() {
            assert_eq!(
                app(gw, &token.access).await,
                200,
                "replica {i}, round {round}, database down"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Logins need the database: 503, promptly.
    for (i, gw) in r.gws.iter().enumerate() {
        let t = Instant::now();
        let resp = login_attempt(gw, "ada@example.com", PW).await;
        let took = t.elapsed();
        eprintln!(
            "replicas: login with the database down answered {} in {took:?}",
            resp.status
        );
        assert_eq!(resp.status, 503, "replica {i}: {}", resp.text());
        assert!(took < PROMPTLY, "replica {i}: the 503 took {took:?}");
    }

    r.pg.start_again_async().await;
    let restarted = Instant::now();
    for (i, gw) in r.gws.iter().enumerate() {
        let took = first_true(restarted, RECOVERY, || async move {
            login_attempt(gw, "ada@example.com", PW).await.status == 200
        })
        .await
        .unwrap_or_else(|| panic!("replica {i}: no login {RECOVERY:?} after the restart"));
        eprintln!("replicas: replica {i} logs in again {took:?} after the restart");
    }
    let url = r.url.as_str();
    let took = first_true(
        restarted,
        RECOVERY,
        || async move { listeners(url).await == 2 },
    )
    .await
    .unwrap_or_else(|| panic!("the replicas did not LISTEN again within {RECOVERY:?}"));
    eprintln!("replicas: both replicas LISTEN again {took:?} after the restart");

    // A revocation made after the restart travels as before.
    let s = login(r.b(), "ada@example.com", PW).await;
    assert_eq!(app(r.a(), &s.access).await, 200);
    logout(r.b(), &s).await;
    let since = Instant::now();
    app_becomes(
        "logout after the restart reaches A",
        r.a(),
        &s.access,
        401,
        since,
        PROPAGATION,
    )
    .await;
    assert_eq!(app(r.a(), &token.access).await, 200);
}

/// /readyz: status code and the `status` member.
async fn readyz(gw: &Gateway) -> (u16, Value) {
    let resp = get(&gw.url("/readyz")).await.unwrap();
    let status = resp.json()["status"].clone();
    (resp.status, status)
}

/// Stops the database and waits (at most 10 s) until every replica says on /readyz that it
/// lost it; returns how long that took.
async fn stop_until_stale(r: &mut Replicas) -> Duration {
    r.pg.stop_async().await;
    let stopped = Instant::now();
    let mut took = Duration::ZERO;
    for (i, gw) in r.gws.iter().enumerate() {
        took = first_true(
            stopped,
            RECOVERY,
            || async move { readyz(gw).await.0 == 503 },
        )
        .await
        .unwrap_or_else(|| panic!("replica {i}: /readyz still 200 {RECOVERY:?} after"));
        let (_, status) = readyz(gw).await;
        assert_eq!(status, "store_unreachable", "replica {i}");
    }
    eprintln!("replicas: stale (stale_after 2s) {took:?} after the database stopped");
    took
}

#[tokio::test]
async fn a_replica_cut_off_from_the_database_for_too_long_fails_closed() {
    let Some(mut r) = Replicas::start(
        2,
        Opts {
            store: "stale_after: 2s, connect_timeout: 1s, query_timeout: 1s",
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let token = signup(r.a(), "ada@example.com", PW).await;
    for gw in &r.gws {
        assert_eq!(app(gw, &token.access).await, 200);
        assert_eq!(readyz(gw).await.0, 200);
    }

    stop_until_stale(&mut r).await;
    for (i, gw) in r.gws.iter().enumerate() {
        // The readiness flip and the refusal are the same decision: no waiting here.
        let resp = get_with(
            &gw.url("/app/x"),
            &[("authorization", &bearer(&token.access))],
        )
        .await;
        assert_eq!(resp.status, 503, "replica {i}, stale: {}", resp.text());
        let public = get(&gw.url("/public/x")).await.unwrap();
        assert_eq!(
            public.status, 200,
            "replica {i}: public routes need no token"
        );
        assert_eq!(
            get(&gw.url("/healthz")).await.unwrap().status,
            200,
            "replica {i}"
        );
    }

    r.pg.start_again_async().await;
    let back = Instant::now();
    for (i, gw) in r.gws.iter().enumerate() {
        app_becomes(
            &format!("replica {i} serves again"),
            gw,
            &token.access,
            200,
            back,
            RECOVERY,
        )
        .await;
        first_true(back, RECOVERY, || async move { readyz(gw).await.0 == 200 })
            .await
            .unwrap_or_else(|| panic!("replica {i}: /readyz not 200 {RECOVERY:?} after"));
    }
}

#[tokio::test]
async fn when_stale_accept_keeps_tokens_working_but_reports_not_ready() {
    let Some(mut r) = Replicas::start(
        2,
        Opts {
            store: "stale_after: 2s, when_stale: accept, connect_timeout: 1s, query_timeout: 1s",
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let token = signup(r.a(), "ada@example.com", PW).await;
    stop_until_stale(&mut r).await;
    for (i, gw) in r.gws.iter().enumerate() {
        assert_eq!(
            app(gw, &token.access).await,
            200,
            "replica {i}, stale but accepting"
        );
        let ready = get(&gw.url("/readyz")).await.unwrap();
        assert!(
            ready.json()["detail"]
                .as_str()
                .unwrap()
                .contains("still accepted"),
            "replica {i}: {}",
            ready.text()
        );
    }
    r.pg.start_again_async().await;
    let back = Instant::now();
    for (i, gw) in r.gws.iter().enumerate() {
        first_true(back, RECOVERY, || async move { readyz(gw).await.0 == 200 })
            .await
            .unwrap_or_else(|| panic!("replica {i}: /readyz not 200 {RECOVERY:?} after"));
    }
}
