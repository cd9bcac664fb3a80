//! Tests of the service against a real redb file, fast argon2 parameters and a driven clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::auth::password::{Argon2Params, HasherConfig, Policy, PolicyError};
use crate::auth::refresh_token;
use crate::store::RefreshState;

const PW: &str = "correct horse battery staple";
const ACCESS_TTL: u64 = 600;
const REFRESH_TTL: u64 = 86_400;
const GRACE: u64 = 10;

fn pw(s: &str) -> SecretString {
    SecretString::new(s.to_owned())
}

fn fast_hasher(m_cost_kib: u32) -> HasherConfig {
    HasherConfig {
        params: Argon2Params {
            m_cost_kib,
            t_cost: 1,
            p_cost: 1,
        },
        max_concurrent: 4,
        max_waiting: 64,
        wait_timeout: Duration::from_secs(30),
        cpu_percent: 100,
    }
}

fn settings() -> ServiceSettings {
    ServiceSettings {
        issuer: "https://gateway.test".into(),
        audience: "gateway.test".into(),
        access_ttl: Duration::from_secs(ACCESS_TTL),
        refresh_ttl: Duration::from_secs(REFRESH_TTL),
        refresh_grace: Duration::from_secs(GRACE),
        algorithm: token::Algorithm::EdDSA,
        hs256_secret: None,
        default_roles: vec!["user".into()],
        signup_open: true,
        stale_after: None,
        refuse_when_stale: true,
        policy: Policy::default(),
        hasher: fast_hasher(1024),
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    clock: Clock,
    svc: AuthService,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(settings()).await
    }

    async fn with(settings: ServiceSettings) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        let store = Store::open(&dir.path().join("gateway.redb")).unwrap();
        let svc = AuthService::open(settings, store, clock.clone())
            .await
            .unwrap();
        Fixture { dir, clock, svc }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("gateway.redb")
    }

    /// A second handle on the file, as the admin CLI would open it.
    fn admin(&self) -> Store {
        Store::open(&self.path()).unwrap()
    }

    /// Logs in with [`PW`] as a user without a second factor: the session.
    async fn login_session(&self, email: &str) -> Issued {
        self.svc
            .login(email, &pw(PW))
            .await
            .unwrap()
            .into_session()
            .expect("a user without a second factor gets a session")
    }

    async fn signup(&self, email: &str) -> Issued {
        self.svc.signup(email, &pw(PW), Some("Ada")).await.unwrap()
    }

    fn auth(&self, issued: &Issued) -> Result<Arc<AccessClaims>, AuthError> {
        self.svc.authenticate(issued.access_token.expose())
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

fn reason(r: Result<Arc<AccessClaims>, AuthError>) -> &'static str {
    match r {
        Err(AuthError::NotAuthenticated(reason)) => reason,
        other => panic!("expected NotAuthenticated, got {other:?}"),
    }
}

fn assert_invalid_refresh(r: Result<Issued, AuthError>) {
    assert!(
        matches!(r, Err(AuthError::InvalidRefresh)),
        "expected InvalidRefresh, got {r:?}"
    );
}

#[tokio::test]
async fn signup_then_authenticate() {
    let f = Fixture::new().await;
    let now = f.clock.unix();
    let issued = f
        .svc
        .signup(" Ada@Example.ORG ", &pw(PW), Some("  Ada\u{7} Lovelace "))
        .await
        .unwrap();
    assert_eq!(issued.user.email, "ada@example.org");
    assert_eq!(issued.user.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(issued.user.roles, vec!["user".to_owned()]);
    assert!(
        issued.user.created_at.ends_with('Z'),
        "{}",
        issued.user.created_at
    );
    assert_eq!(issued.expires_in, ACCESS_TTL);
    assert!(issued.refresh_expires_at >= now + REFRESH_TTL);
    assert!(refresh_token::well_formed(issued.refresh_token.expose()));

    let claims = f.auth(&issued).unwrap();
    assert_eq!(*claims, issued.claims);
    assert_eq!(claims.sub, issued.user.id);
    assert_eq!(claims.email, "ada@example.org");
    assert_eq!(claims.sv, 0);
    let stored = f.svc.store().user_by_id(&claims.sub).unwrap().unwrap();
    assert!(stored.password_hash.starts_with("$argon2id$"));
    let record = f
        .svc
        .store()
        .get_refresh(&refresh_token::hash(issued.refresh_token.expose()))
        .unwrap()
        .unwrap();
    assert_eq!(claims.sid, record.family);
    assert_eq!(record.family_expires_at, issued.refresh_expires_at);

    let user = f.svc.user(&claims.sub).await.unwrap();
    assert_eq!(user.email, "ada@example.org");
    assert_eq!(user.created_at, issued.user.created_at);
}

#[tokio::test]
async fn duplicate_email_is_taken_ignoring_case() {
    let f = Fixture::new().await;
    f.signup("ada@example.org").await;
    let again = f.svc.signup("ADA@example.org", &pw(PW), None).await;
    assert!(matches!(again, Err(AuthError::EmailTaken)), "{again:?}");
    assert_eq!(
        AuthError::EmailTaken.to_string(),
        "Email already registered"
    );
}

#[tokio::test]
async fn invalid_email_is_refused() {
    let f = Fixture::new().await;
    for bad in ["ada", "ada@localhost", "a da@example.org", ""] {
        let r = f.svc.signup(bad, &pw(PW), None).await;
        assert!(matches!(r, Err(AuthError::InvalidEmail)), "{bad:?}: {r:?}");
    }
}

#[tokio::test]
async fn weak_and_common_passwords_are_refused() {
    let f = Fixture::new().await;
    let short = f.svc.signup("ada@example.org", &pw("short"), None).await;
    match short {
        Err(AuthError::WeakPassword(e)) => {
            assert_eq!(e, PolicyError::TooShort { min: 8 });
            assert_eq!(
                AuthError::WeakPassword(e).to_string(),
                "Password must be at least 8 characters"
            );
        }
        other => panic!("{other:?}"),
    }
    let common = f.svc.signup("ada@example.org", &pw("password"), None).await;
    assert!(
        matches!(common, Err(AuthError::WeakPassword(PolicyError::Common))),
        "{common:?}"
    );
    // Nothing was created.
    assert!(
        f.svc
            .store()
            .user_by_email("ada@example.org")
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn signup_closed() {
    let f = Fixture::with(ServiceSettings {
        signup_open: false,
        ..settings()
    })
    .await;
    let r = f.svc.signup("ada@example.org", &pw(PW), None).await;
    assert!(matches!(r, Err(AuthError::SignupClosed)), "{r:?}");
}

#[tokio::test]
async fn login_ok_and_failures_look_the_same() {
    let f = Fixture::new().await;
    let signed_up = f.signup("ada@example.org").await;

    let ok = f.login_session("ADA@example.org").await;
    assert_eq!(ok.user.id, signed_up.user.id);
    assert_ne!(ok.claims.sid, signed_up.claims.sid, "a new session");
    f.auth(&ok).unwrap();

    let wrong = f
        .svc
        .login("ada@example.org", &pw("not the password"))
        .await;
    let unknown = f.svc.login("bob@example.org", &pw(PW)).await;
    let malformed = f.svc.login("bob", &pw(PW)).await;
    for r in [&wrong, &unknown, &malformed] {
        match r {
            Err(e @ AuthError::InvalidCredentials) => {
                assert_eq!(e.to_string(), "Incorrect email or password");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn unknown_email_still_runs_the_hasher() {
    // One hashing slot, no queue, slow parameters: while a real verification holds the slot,
    // a login for an unknown email must hit the hasher too (and be refused as busy). Answering
    // InvalidCredentials at once would reveal that the email is unknown by its speed.
    let f = Fixture::with(ServiceSettings {
        hasher: HasherConfig {
            params: Argon2Params {
                m_cost_kib: 32 * 1024,
                t_cost: 6,
                p_cost: 1,
            },
            max_concurrent: 1,
            max_waiting: 0,
            wait_timeout: Duration::from_secs(60),
            cpu_percent: 100,
        },
        ..settings()
    })
    .await;
    f.signup("ada@example.org").await;
    let svc = f.svc.clone();
    let running = tokio::spawn(async move { svc.login("ada@example.org", &pw(PW)).await });
    while f.svc.inner.hasher.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let unknown = f.svc.login("nobody@example.org", &pw(PW)).await;
    assert!(matches!(unknown, Err(AuthError::Busy)), "{unknown:?}");
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn disabled_user_cannot_log_in_and_live_tokens_die() {
    let f = Fixture::new().await;
    let issued = f.signup("ada@example.org").await;
    let admin = f.admin();
    let mut user = admin.user_by_id(&issued.user.id).unwrap().unwrap();
    user.disabled = true;
    admin.update_user(&user).unwrap();

    let login = f.svc.login("ada@example.org", &pw(PW)).await;
    assert!(
        matches!(login, Err(AuthError::InvalidCredentials)),
        "{login:?}"
    );
    assert!(f.svc.poll_changes().await.unwrap() >= 1);
    assert_eq!(reason(f.auth(&issued)), "disabled");
    assert_invalid_refresh(f.svc.refresh(&issued.refresh_token).await);
    assert!(matches!(
        f.svc.user(&issued.user.id).await,
        Err(AuthError::NotAuthenticated("disabled"))
    ));
    // The refused refresh ended the session for good: enabling the user again does not bring
    // it back, but they can log in.
    user.disabled = false;
    admin.update_user(&user).unwrap();
    f.svc.poll_changes().await.unwrap();
    assert_invalid_refresh(f.svc.refresh(&issued.refresh_token).await);
    f.login_session("ada@example.org").await;
}

#[tokio::test]
async fn refresh_rotates_and_old_token_works_only_within_grace() {
    let f = Fixture::new().await;
    let first = f.signup("ada@example.org").await;
    f.advance(1);
    let second = f.svc.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.claims.jti, first.claims.jti);
    assert_eq!(second.claims.sid, first.claims.sid);
    assert_eq!(second.refresh_expires_at, first.refresh_expires_at);
    f.auth(&second).unwrap();
    // Only the hash is stored, and the old token is marked rotated.
    let store = f.svc.store();
    assert!(matches!(
        store
            .get_refresh(&refresh_token::hash(first.refresh_token.expose()))
            .unwrap()
            .unwrap()
            .state,
        RefreshState::Rotated { .. }
    ));

    // Within the grace window the old token yields the same successor again.
    f.advance(GRACE);
    let again = f.svc.refresh(&first.refresh_token).await.unwrap();
    assert_eq!(again.refresh_token, second.refresh_token);
    assert_ne!(again.claims.jti, second.claims.jti);
    f.auth(&again).unwrap();

    // One second later it is reuse.
    f.advance(1);
    assert_invalid_refresh(f.svc.refresh(&first.refresh_token).await);
}

#[tokio::test]
async fn reuse_after_grace_kills_the_whole_family() {
    let f = Fixture::new().await;
    let first = f.signup("ada@example.org").await;
    let other_session = f.login_session("ada@example.org").await;
    let second = f.svc.refresh(&first.refresh_token).await.unwrap();
    f.advance(GRACE + 1);

    assert_invalid_refresh(f.svc.refresh(&first.refresh_token).await);
    // The newest refresh token of the family is dead, and so are its access tokens.
    assert_invalid_refresh(f.svc.refresh(&second.refresh_token).await);
    assert_eq!(reason(f.auth(&second)), "revoked");
    assert_eq!(reason(f.auth(&first)), "revoked");
    // Other sessions of the same user are untouched.
    f.auth(&other_session).unwrap();
    f.svc.refresh(&other_session.refresh_token).await.unwrap();
}

#[tokio::test]
async fn zero_grace_means_replay_in_the_same_second_is_reuse() {
    let f = Fixture::with(ServiceSettings {
        refresh_grace: Duration::ZERO,
        ..settings()
    })
    .await;
    let first = f.signup("ada@example.org").await;
    let second = f.svc.refresh(&first.refresh_token).await.unwrap();
    // The clock has not moved: without a grace window this is still reuse.
    assert_invalid_refresh(f.svc.refresh(&first.refresh_token).await);
    assert_invalid_refresh(f.svc.refresh(&second.refresh_token).await);
    assert_eq!(reason(f.auth(&second)), "revoked");
}

#[tokio::test]
async fn concurrent_refreshes_within_grace_agree() {
    let f = Fixture::new().await;
    let first = f.signup("ada@example.org").await;
    let (a, b) = tokio::join!(
        f.svc.refresh(&first.refresh_token),
        f.svc.refresh(&first.refresh_token)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.refresh_token, b.refresh_token);
    assert_ne!(a.claims.jti, b.claims.jti);
    f.auth(&a).unwrap();
    f.auth(&b).unwrap();
    // The shared token keeps working for both tabs.
    let c = f.svc.refresh(&a.refresh_token).await.unwrap();
    f.auth(&c).unwrap();
}

#[tokio::test]
async fn late_tab_follows_the_chain_within_grace() {
    let f = Fixture::new().await;
    let t0 = f.signup("ada@example.org").await;
    let t1 = f.svc.refresh(&t0.refresh_token).await.unwrap();
    f.advance(2);
    let t2 = f.svc.refresh(&t1.refresh_token).await.unwrap();
    f.advance(2);
    // The slow tab still holds t0: it gets the newest token of the chain.
    let late = f.svc.refresh(&t0.refresh_token).await.unwrap();
    assert_eq!(late.refresh_token, t2.refresh_token);
    f.auth(&late).unwrap();
    // Once t1's rotation is outside the grace window, t0 is reuse even though t0's own
    // rotation is checked first.
    f.advance(GRACE);
    assert_invalid_refresh(f.svc.refresh(&t0.refresh_token).await);
    assert_invalid_refresh(f.svc.refresh(&t2.refresh_token).await);
}

#[tokio::test]
async fn logout_kills_access_and_refresh_immediately() {
    let f = Fixture::new().await;
    let session = f.signup("ada@example.org").await;
    let other = f.login_session("ada@example.org").await;
    // A second access token of the same session, as another tab would hold.
    let sibling = f.svc.refresh(&session.refresh_token).await.unwrap();

    let claims = f.auth(&session).unwrap();
    f.svc
        .logout(Some(&*claims), Some(&sibling.refresh_token))
        .await
        .unwrap();
    assert_eq!(reason(f.auth(&session)), "revoked");
    assert_eq!(reason(f.auth(&sibling)), "revoked");
    assert_invalid_refresh(f.svc.refresh(&sibling.refresh_token).await);
    f.auth(&other).unwrap();

    // The access token alone also ends its refresh family.
    let claims = f.auth(&other).unwrap();
    f.svc.logout(Some(&*claims), None).await.unwrap();
    assert_eq!(reason(f.auth(&other)), "revoked");
    assert_invalid_refresh(f.svc.refresh(&other.refresh_token).await);

    // A sweep does not forget revocations of tokens that are still within their lifetime.
    f.svc.sweep().await.unwrap();
    assert_eq!(reason(f.auth(&session)), "revoked");
}

#[tokio::test]
async fn logout_with_refresh_token_only() {
    let f = Fixture::new().await;
    let session = f.signup("ada@example.org").await;
    f.svc
        .logout(None, Some(&session.refresh_token))
        .await
        .unwrap();
    assert_eq!(reason(f.auth(&session)), "revoked");
    assert_invalid_refresh(f.svc.refresh(&session.refresh_token).await);
    // Garbage is not an error.
    f.svc.logout(None, Some(&pw("nonsense"))).await.unwrap();
}

#[tokio::test]
async fn logout_all_kills_every_session_of_that_user_only() {
    let f = Fixture::new().await;
    let a1 = f.signup("ada@example.org").await;
    let a2 = f.login_session("ada@example.org").await;
    let b = f.signup("bob@example.org").await;

    f.svc.logout_all(&a1.user.id).await.unwrap();
    for s in [&a1, &a2] {
        assert_eq!(reason(f.auth(s)), "revoked");
        assert_invalid_refresh(f.svc.refresh(&s.refresh_token).await);
    }
    f.auth(&b).unwrap();
    f.svc.refresh(&b.refresh_token).await.unwrap();

    let fresh = f.login_session("ada@example.org").await;
    assert_eq!(fresh.claims.sv, 1);
    f.auth(&fresh).unwrap();
    f.svc.logout_all("no-such-user").await.unwrap();
}

/// A login whose password check ran against the old password, and whose session is stored only
/// after a password change ended the user's sessions, must not keep that session.
#[tokio::test]
async fn a_session_started_on_a_password_changed_meanwhile_is_ended() {
    let f = Fixture::new().await;
    let first = f.signup("ada@example.org").await;
    let admin = f.admin();
    let before = admin.user_by_email("ada@example.org").unwrap().unwrap();
    // The change lands between the login's check and its session: hash, then sessions ended.
    admin
        .modify_user(&before.id, |u| {
            u.password_hash = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHQ$changed".into();
            Ok(())
        })
        .unwrap();
    admin.end_all_sessions(&before.id, f.clock.unix()).unwrap();

    let late = f
        .svc
        .start_session(&before, Client::default(), SignIn::Password)
        .await;
    assert!(
        matches!(late, Err(AuthError::InvalidCredentials)),
        "{late:?}"
    );
    let live = admin.sessions_of(&before.id, f.clock.unix()).unwrap();
    assert!(
        live.iter().all(|s| s.ended_at.is_some()),
        "a session outlived the change: {live:?}"
    );
    assert_invalid_refresh(f.svc.refresh(&first.refresh_token).await);

    // With the password unchanged, the same call starts a session.
    let now = admin.user_by_id(&before.id).unwrap().unwrap();
    f.svc
        .start_session(&now, Client::default(), SignIn::Password)
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_access_token_is_rejected() {
    let f = Fixture::new().await;
    let issued = f.signup("ada@example.org").await;
    f.advance(ACCESS_TTL - 1);
    f.auth(&issued).unwrap();
    f.advance(1 + ACCESS_LEEWAY_SECS);
    assert_eq!(reason(f.auth(&issued)), "expired");
    // The session goes on with a refresh.
    let next = f.svc.refresh(&issued.refresh_token).await.unwrap();
    f.auth(&next).unwrap();
}

#[tokio::test]
async fn refresh_family_expires_absolutely() {
    let f = Fixture::new().await;
    let first = f.signup("ada@example.org").await;
    f.advance(REFRESH_TTL - 100);
    let late = f.svc.refresh(&first.refresh_token).await.unwrap();
    assert_eq!(late.refresh_expires_at, first.refresh_expires_at);
    // The access token does not outlive the session.
    assert!(late.expires_in <= 100, "{}", late.expires_in);
    assert!(late.claims.exp <= first.refresh_expires_at);
    f.advance(100);
    assert_invalid_refresh(f.svc.refresh(&late.refresh_token).await);
}

#[tokio::test]
async fn tokens_are_not_interchangeable() {
    let f = Fixture::new().await;
    let issued = f.signup("ada@example.org").await;
    assert_eq!(
        reason(f.svc.authenticate(issued.refresh_token.expose())),
        "invalid"
    );
    assert_invalid_refresh(f.svc.refresh(&issued.access_token).await);
    assert_eq!(reason(f.svc.authenticate("")), "invalid");
    // A well-formed but unknown refresh token.
    assert_invalid_refresh(f.svc.refresh(&refresh_token::generate()).await);
}

#[tokio::test]
async fn data_survives_reopening() {
    let f = Fixture::new().await;
    let issued = f.signup("ada@example.org").await;
    let revoked = f.login_session("ada@example.org").await;
    f.svc.logout(Some(&revoked.claims), None).await.unwrap();
    let jwks = f.svc.jwks();
    let Fixture { dir, clock, svc } = f;
    drop(svc);

    let store = Store::open(&dir.path().join("gateway.redb")).unwrap();
    let svc = AuthService::open(settings(), store, clock).await.unwrap();
    assert_eq!(svc.jwks(), jwks);
    assert_eq!(
        svc.authenticate(issued.access_token.expose()).unwrap().sub,
        issued.user.id
    );
    assert!(matches!(
        svc.authenticate(revoked.access_token.expose()),
        Err(AuthError::NotAuthenticated("revoked"))
    ));
    svc.login("ada@example.org", &pw(PW))
        .await
        .unwrap()
        .into_session()
        .unwrap();
    svc.refresh(&issued.refresh_token).await.unwrap();
}

#[tokio::test]
async fn concurrent_first_starts_agree_on_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.redb");
    let (a, b) = tokio::join!(
        AuthService::open(settings(), Store::open(&path).unwrap(), Clock::system()),
        AuthService::open(settings(), Store::open(&path).unwrap(), Clock::system()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.keys().current_kid(), b.keys().current_kid());
    assert_eq!(a.jwks()["keys"].as_array().unwrap().len(), 1);
    // And the same refresh successor key: a token rotated by one is honoured by the other.
    let issued = a.signup("ada@example.org", &pw(PW), None).await.unwrap();
    let next = a.refresh(&issued.refresh_token).await.unwrap();
    let again = b.refresh(&issued.refresh_token).await.unwrap();
    assert_eq!(again.refresh_token, next.refresh_token);
    b.authenticate(next.access_token.expose()).unwrap();
}

#[tokio::test]
async fn poll_changes_applies_admin_writes() {
    let f = Fixture::new().await;
    let ada = f.signup("ada@example.org").await;
    let bob = f.signup("bob@example.org").await;
    let carol = f.signup("carol@example.org").await;
    let admin = f.admin();
    // Our own writes come back through the feed too (applying them again is harmless).
    f.svc.poll_changes().await.unwrap();
    assert_eq!(f.svc.poll_changes().await.unwrap(), 0);

    let mut user = admin.user_by_id(&ada.user.id).unwrap().unwrap();
    user.disabled = true;
    admin.update_user(&user).unwrap();
    admin
        .end_all_sessions(&bob.user.id, f.clock.unix())
        .unwrap();
    admin.delete_user(&carol.user.id, f.clock.unix()).unwrap();
    admin.revoke_jti("some-jti", f.clock.unix() + 60).unwrap();

    // Nothing is read from disk on the hot path until the poll.
    f.auth(&ada).unwrap();
    f.auth(&bob).unwrap();
    f.auth(&carol).unwrap();
    assert!(f.svc.poll_changes().await.unwrap() >= 4);
    assert_eq!(reason(f.auth(&ada)), "disabled");
    assert_eq!(reason(f.auth(&bob)), "revoked");
    // Deletion revokes the user's families, which is checked first ...
    assert_eq!(reason(f.auth(&carol)), "revoked");
    // ... and marks the user disabled, which catches a token of any other family.
    let other_family = AccessClaims {
        sid: "another-family".into(),
        jti: "another-jti".into(),
        ..carol.claims.clone()
    };
    assert_eq!(
        f.svc.inner.revocations.read().unwrap().check(&other_family),
        Err("disabled")
    );
    assert_eq!(f.svc.poll_changes().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_task_polls_until_shutdown() {
    let f = Fixture::new().await;
    let ada = f.signup("ada@example.org").await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    f.svc.spawn_maintenance(rx);
    let admin = f.admin();
    let mut user = admin.user_by_id(&ada.user.id).unwrap().unwrap();
    user.disabled = true;
    admin.update_user(&user).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.auth(&ada).is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "never polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reason(f.auth(&ada)), "disabled");
    tx.send(true).unwrap();
}

#[tokio::test]
async fn hs256_service() {
    let secret = Secret::new(vec![7u8; 32]);
    let f = Fixture::with(ServiceSettings {
        algorithm: token::Algorithm::HS256,
        hs256_secret: Some(secret),
        ..settings()
    })
    .await;
    assert_eq!(f.svc.jwks(), serde_json::json!({ "keys": [] }));
    let issued = f.signup("ada@example.org").await;
    f.auth(&issued).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("gateway.redb")).unwrap();
    let missing = AuthService::open(
        ServiceSettings {
            algorithm: token::Algorithm::HS256,
            ..settings()
        },
        store,
        Clock::system(),
    )
    .await;
    assert!(matches!(missing, Err(AuthError::Internal(_))));
}

#[tokio::test]
async fn login_upgrades_outdated_hashes() {
    let f = Fixture::new().await;
    let issued = f.signup("ada@example.org").await;
    let Fixture { dir, clock, svc } = f;
    let store = svc.store().clone();
    let old = store.user_by_id(&issued.user.id).unwrap().unwrap();
    assert!(old.password_hash.contains("m=1024"));
    drop(svc);

    let svc = AuthService::open(
        ServiceSettings {
            hasher: fast_hasher(2048),
            ..settings()
        },
        store.clone(),
        clock,
    )
    .await
    .unwrap();
    svc.login("ada@example.org", &pw(PW))
        .await
        .unwrap()
        .into_session()
        .unwrap();
    let new = store.user_by_id(&issued.user.id).unwrap().unwrap();
    assert!(
        new.password_hash.contains("m=2048"),
        "{}",
        new.password_hash
    );
    svc.login("ada@example.org", &pw(PW))
        .await
        .unwrap()
        .into_session()
        .unwrap();
    drop(dir);
}

#[test]
fn clean_name_rules() {
    assert_eq!(clean_name("  Ada  "), Some("Ada".into()));
    assert_eq!(clean_name(" \t "), None);
    assert_eq!(clean_name("A\r\nda"), Some("Ada".into()));
    assert_eq!(clean_name(&"x".repeat(500)).unwrap().chars().count(), 128);
}

/// The verified-token cache skips only the signature check: revocation, disabling and the
/// session version still apply to a cached token on its very next use.
#[tokio::test]
async fn cached_token_is_still_revocation_checked() {
    let f = Fixture::new().await;
    let issued = f.signup("ada@example.org").await;
    let other = f.login_session("ada@example.org").await;
    let claims = f.auth(&issued).unwrap();
    f.auth(&other).unwrap();
    assert_eq!(f.svc.verified_cache_len(), 2, "both tokens are cached");

    // Revoked by jti and family (logout) while cached.
    f.svc.logout(Some(&*claims), None).await.unwrap();
    assert_eq!(reason(f.auth(&issued)), "revoked");
    assert_eq!(
        f.svc.verified_cache_len(),
        1,
        "a refused token leaves the cache"
    );
    assert_eq!(reason(f.auth(&issued)), "revoked");

    // Revoked by session version (logout everywhere) while cached.
    f.auth(&other).unwrap();
    f.svc.logout_all(&other.user.id).await.unwrap();
    assert_eq!(reason(f.auth(&other)), "revoked");
}

#[tokio::test]
async fn cached_token_is_refused_once_expired() {
    let f = Fixture::new().await;
    let issued = f.signup("ada@example.org").await;
    f.auth(&issued).unwrap();
    assert_eq!(f.svc.verified_cache_len(), 1);
    f.advance(ACCESS_TTL - 1);
    f.auth(&issued).unwrap();
    // Past exp + leeway: refused from the cache, and the entry is gone.
    f.advance(1 + ACCESS_LEEWAY_SECS);
    assert_eq!(reason(f.auth(&issued)), "expired");
    assert_eq!(f.svc.verified_cache_len(), 0);
    assert_eq!(reason(f.auth(&issued)), "expired");
}

#[tokio::test]
async fn forged_tokens_are_never_cached() {
    let f = Fixture::new().await;
    let issued = f.signup("ada@example.org").await;
    let token = issued.access_token.expose();
    // Flip a character of the signature: same claims, bad signature.
    let (head, last) = token.split_at(token.len() - 2);
    let flipped = if last.starts_with('A') { "B" } else { "A" };
    let forged = format!("{head}{flipped}{}", &last[1..]);
    for _ in 0..3 {
        assert_eq!(reason(f.svc.authenticate(&forged)), "invalid");
    }
    assert_eq!(f.svc.verified_cache_len(), 0);
}

#[tokio::test]
async fn sessions_are_recorded_at_login_touched_by_refresh_and_ended_by_logout() {
    let f = Fixture::new().await;
    let first = f.signup("ada@example.org").await;
    let started = f.clock.unix();
    f.advance(1);
    let other = f.login_session("ada@example.org").await;
    let store = f.svc.store();
    let id = first.user.id.clone();
    let listed = store.sessions_of(&id, f.clock.unix()).unwrap();
    let families: Vec<&str> = listed.iter().map(|s| s.family.as_str()).collect();
    assert_eq!(
        families,
        [other.claims.sid.as_str(), first.claims.sid.as_str()]
    );
    assert_eq!(listed[1].created_at, started);
    assert_eq!(listed[1].expires_at, first.refresh_expires_at);

    f.advance(5);
    // The clock is the system's plus the advance: a second may tick during the refresh.
    let before = f.clock.unix();
    f.svc.refresh(&first.refresh_token).await.unwrap();
    let listed = store.sessions_of(&id, f.clock.unix()).unwrap();
    assert!(
        (before..=f.clock.unix()).contains(&listed[1].last_used_at),
        "{} not in {before}..",
        listed[1].last_used_at
    );

    f.svc
        .logout(None, Some(&other.refresh_token))
        .await
        .unwrap();
    let listed = store.sessions_of(&id, f.clock.unix()).unwrap();
    let families: Vec<&str> = listed.iter().map(|s| s.family.as_str()).collect();
    assert_eq!(families, [first.claims.sid.as_str()]);
}
