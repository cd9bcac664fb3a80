//! Refresh-token rotation across replicas: reuse on another replica kills the family, and one
//! token presented to two replicas at once rotates once.

use super::*;

#[tokio::test]
async fn a_rotated_refresh_token_reused_on_another_replica_kills_the_family() {
    let Some(r) = Replicas::start(
        2,
        Opts {
            auth: "refresh_grace: 0s",
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let (a, b) = (r.a(), r.b());
    let first = signup(a, "ada@example.com", PW).await;
    let second = refreshed(a, &first.refresh).await;
    assert_eq!(app(b, &second.access).await, 200);

    // The rotated token comes back, on the other replica: reuse.
    let reuse = refresh(b, &first.refresh).await;
    assert_eq!(reuse.status, 401, "{}", reuse.text());
    let since = Instant::now();
    // The successor is dead in the database at once, wherever it is presented.
    let r2 = refresh(a, &second.refresh).await;
    assert_eq!(r2.status, 401, "the successor after reuse: {}", r2.text());
    assert_eq!(
        app(b, &second.access).await,
        401,
        "refused at once where reuse was seen"
    );
    refused_everywhere(
        "reuse on B reaches A",
        &[a, b],
        &[&second.access, &first.access],
        since,
    )
    .await;
}

/// One round: a fresh session on A, its refresh token presented to A and B at the same time.
/// Returns both answers and the session id.
async fn refresh_on_both(r: &Replicas, email: &str) -> (Resp, Resp, Tokens) {
    let s = login(r.a(), email, PW).await;
    let (x, y) = tokio::join!(refresh(r.a(), &s.refresh), refresh(r.b(), &s.refresh));
    (x, y, s)
}

/// The states of a family's rows in the database, sorted (`active`, `revoked`, `rotated`).
async fn family_rows(client: &tokio_postgres::Client, family: &str) -> Vec<(String, Vec<u8>)> {
    let rows = client
        .query(
            "SELECT state, hash FROM gateway_refresh_tokens WHERE family = $1 ORDER BY state",
            &[&family],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_token_on_two_replicas_at_once_rotates_once_within_grace() {
    let Some(r) = Replicas::start(2, Opts::default()).await else {
        return;
    };
    signup(r.a(), "ada@example.com", PW).await;
    let client = r.db().await;
    for round in 0..10 {
        let (x, y, s) = refresh_on_both(&r, "ada@example.com").await;
        assert_eq!(
            (x.status, y.status),
            (200, 200),
            "round {round}: {} / {}",
            x.text(),
            y.text()
        );
        let (x, y) = (x.json(), y.json());
        let token = x["refresh_token"].as_str().unwrap();
        assert_eq!(
            token, y["refresh_token"],
            "round {round}: both replicas hand out the same successor"
        );
        let rows = family_rows(&client, &sid(&s.access)).await;
        let states: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            states,
            ["active", "rotated"],
            "round {round}: exactly one new token"
        );
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        assert_eq!(
            rows[0].1, hash,
            "round {round}: the active row is the token handed out"
        );
        for t in [&x, &y] {
            let access = t["access_token"].as_str().unwrap();
            assert_eq!(app(r.a(), access).await, 200, "round {round}");
            assert_eq!(app(r.b(), access).await, 200, "round {round}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_token_on_two_replicas_at_once_rotates_once_without_grace() {
    let Some(r) = Replicas::start(
        2,
        Opts {
            auth: "refresh_grace: 0s",
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    signup(r.a(), "ada@example.com", PW).await;
    let client = r.db().await;
    for round in 0..10 {
        let (x, y, s) = refresh_on_both(&r, "ada@example.com").await;
        let mut statuses = [x.status, y.status];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 401],
            "round {round}: {} / {}",
            x.text(),
            y.text()
        );
        // Whichever came second presented a rotated token without grace: that is reuse, and
        // the whole family (the winner's new token too) is revoked. No second successor.
        let rows = family_rows(&client, &sid(&s.access)).await;
        let states: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            states,
            ["revoked", "revoked"],
            "round {round}: one successor, then revoked"
        );
        let winner = if x.status == 200 { x.json() } else { y.json() };
        let token = winner["refresh_token"].as_str().unwrap();
        assert_eq!(refresh(r.a(), token).await.status, 401, "round {round}");
    }
}
