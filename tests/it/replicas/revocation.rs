//! Revocations made on one replica, or by the admin CLI, reach every replica: within a
//! second while they run, at start-up for one that was down.

use super::*;

/// A client `LISTEN`ing on the change channel like a replica; the receiver gets each
/// notification's payload (the change's sequence number). Drop the client to stop.
async fn notifications(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<i64>,
) {
    let (client, mut conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().parse().unwrap());
            }
        }
    });
    client
        .batch_execute("LISTEN gateway_changes")
        .await
        .unwrap();
    (client, rx)
}

/// The changes notified until none came for 200 ms (at least one, within 5 s), as stored.
async fn notified_changes(
    client: &tokio_postgres::Client,
    notes: &mut tokio::sync::mpsc::UnboundedReceiver<i64>,
) -> Vec<String> {
    let first = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("no NOTIFY on gateway_changes within 5 s of the change");
    let mut seqs = vec![first.unwrap()];
    while let Ok(Some(seq)) = tokio::time::timeout(Duration::from_millis(200), notes.recv()).await {
        seqs.push(seq);
    }
    client
        .query(
            "SELECT change FROM gateway_changes WHERE seq = ANY($1) ORDER BY seq",
            &[&seqs],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

// ---- While the replicas run ----

#[tokio::test]
async fn a_logout_on_one_replica_is_refused_by_the_other_within_a_second() {
    let Some(r) = Replicas::start(2, Opts::default()).await else {
        return;
    };
    let (a, b) = (r.a(), r.b());
    let other = signup(a, "ada@example.com", PW).await;
    let s = login(b, "ada@example.com", PW).await;
    assert_eq!(app(a, &s.access).await, 200, "the session works on A first");
    // The 1 s bound would also be met by the 1 s poll alone: check the wake-up itself too.
    let (listener, mut notes) = notifications(&r.url).await;

    logout(b, &s).await;
    let since = Instant::now();
    assert_eq!(
        app(b, &s.access).await,
        401,
        "refused at once where it was ended"
    );
    app_becomes(
        "logout on B reaches A",
        a,
        &s.access,
        401,
        since,
        PROPAGATION,
    )
    .await;
    let changes = notified_changes(&listener, &mut notes).await;
    let jti = jwt(&s.access).1["jti"].as_str().unwrap().to_owned();
    assert!(
        changes.iter().any(|c| c.contains(&jti)),
        "the logout was not notified: {changes:?}"
    );
    assert_eq!(
        refresh(a, &s.refresh).await.status,
        401,
        "its refresh token too"
    );

    // Only that session ended.
    assert_eq!(app(a, &other.access).await, 200);
    assert_eq!(app(b, &other.access).await, 200);
}

#[tokio::test]
async fn logout_all_and_admin_commands_reach_every_replica_within_a_second() {
    let Some(r) = Replicas::start(2, Opts::default()).await else {
        return;
    };
    let (a, b) = (r.a(), r.b());
    signup(a, "ada@example.com", PW).await;
    // A session started on each replica, both working on both.
    let sessions = || async move {
        let s = [
            login(a, "ada@example.com", PW).await,
            login(b, "ada@example.com", PW).await,
        ];
        for t in &s {
            assert_eq!(app(a, &t.access).await, 200);
            assert_eq!(app(b, &t.access).await, 200);
        }
        s
    };

    // logout-all through the API of A.
    let s = sessions().await;
    let r1 = post_json(
        &a.url("/api/auth/logout-all"),
        &json!({}),
        &[("authorization", &bearer(&s[0].access))],
    )
    .await;
    assert_eq!(r1.status, 204, "{}", r1.text());
    let since = Instant::now();
    refused_everywhere(
        "logout-all on A",
        &[a, b],
        &[&s[0].access, &s[1].access],
        since,
    )
    .await;

    // `gateway user revoke-sessions`, measured from the command's exit.
    let s = sessions().await;
    r.cli_ok(&["user", "revoke-sessions", "ada@example.com"])
        .await;
    let since = Instant::now();
    refused_everywhere(
        "CLI revoke-sessions",
        &[a, b],
        &[&s[0].access, &s[1].access],
        since,
    )
    .await;
    for t in &s {
        assert_eq!(refresh(b, &t.refresh).await.status, 401);
    }

    // `gateway user disable`: tokens refused, logins too, until `enable`.
    let s = sessions().await;
    r.cli_ok(&["user", "disable", "ada@example.com"]).await;
    let since = Instant::now();
    refused_everywhere("CLI disable", &[a, b], &[&s[0].access, &s[1].access], since).await;
    for gw in [a, b] {
        assert_eq!(login_attempt(gw, "ada@example.com", PW).await.status, 401);
    }
    // Enabling travels like any change: A may refuse a token B issued right after it until A
    // has read the change, so this too is "within a second".
    r.cli_ok(&["user", "enable", "ada@example.com"]).await;
    let since = Instant::now();
    let again = login(b, "ada@example.com", PW).await;
    app_becomes(
        "CLI enable reaches A",
        a,
        &again.access,
        200,
        since,
        PROPAGATION,
    )
    .await;
}

// ---- A replica that was down ----

#[tokio::test]
async fn a_replica_restarted_after_missing_changes_refuses_what_was_revoked_meanwhile() {
    let Some(mut r) = Replicas::start(2, Opts::default()).await else {
        return;
    };
    let kept = signup(r.a(), "ada@example.com", PW).await;
    let ended = login(r.b(), "ada@example.com", PW).await;
    signup(r.b(), "bob@example.com", PW).await;
    let bob = login(r.a(), "bob@example.com", PW).await;

    let a = r.gws.remove(0);
    a.shutdown().await;
    // While A is down: a logout on B, and an admin command.
    logout(&r.gws[0], &ended).await;
    r.cli_ok(&["user", "revoke-sessions", "bob@example.com"])
        .await;

    let a = Gateway::start(&r.yaml).await;
    assert_eq!(
        app(&a, &ended.access).await,
        401,
        "the logged-out session, at once"
    );
    assert_eq!(
        app(&a, &bob.access).await,
        401,
        "the revoked sessions, at once"
    );
    assert_eq!(
        app(&a, &kept.access).await,
        200,
        "other sessions still work"
    );
}

// ---- Account lifecycle ----

/// A password reset through replica B ends, within a second, every session on replica A too:
/// the tokens and the refresh tokens; the new password then works on both.
#[tokio::test]
async fn a_password_reset_on_one_replica_ends_sessions_on_the_other_within_a_second() {
    let Some(sink) = crate::smtp::SmtpSink::start() else {
        return;
    };
    let email = format!(
        "email: {{smtp_url: '{}', from: 'no-reply@acme.example', public_url: 'https://login.acme.example'}}",
        sink.url()
    );
    let Some(r) = Replicas::start(
        2,
        Opts {
            extra: &email,
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let (a, b) = (r.a(), r.b());
    let first = signup(a, "ada@example.com", PW).await;
    sink.wait_for_message(Duration::from_secs(10)).await; // the verification mail
    let second = login(a, "ada@example.com", PW).await;
    for t in [&first, &second] {
        assert_eq!(app(b, &t.access).await, 200, "the sessions work on B first");
    }

    let asked = post_json(
        &b.url("/api/auth/forgot-password"),
        &json!({"email": "ada@example.com"}),
        &[],
    )
    .await;
    assert_eq!(asked.status, 202, "{}", asked.text());
    let mail = sink.wait_for_message(Duration::from_secs(10)).await;
    let token = crate::smtp::link_token(
        mail.text.as_deref().unwrap_or_default(),
        "https://login.acme.example/api/auth/reset-password?token=",
    );
    let done = post_json(
        &b.url("/api/auth/reset-password"),
        &json!({"token": token, "password": "a brand new passphrase"}),
        &[],
    )
    .await;
    assert!(
        done.status < 300,
        "reset on B: {} {}",
        done.status,
        done.text()
    );
    let since = Instant::now();
    refused_everywhere(
        "password reset on B",
        &[a, b],
        &[&first.access, &second.access],
        since,
    )
    .await;
    for t in [&first, &second] {
        assert_eq!(refresh(a, &t.refresh).await.status, 401, "refresh on A");
    }
    assert_eq!(
        login_attempt(a, "ada@example.com", PW).await.status,
        401,
        "the old password on A"
    );
    let again = login(a, "ada@example.com", "a brand new passphrase").await;
    assert_eq!(app(b, &again.access).await, 200);
}
