//! Benchmarks of what every proxied request pays: token verification (EdDSA and HS256, cached
//! and uncached), the revocation check against a large deny-list, route matching, header
//! rewriting and path normalisation.
//!
//! `cargo bench --bench hot_path`; `BENCHMARKS.md` has the numbers and how they were taken.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use gateway::auth::password::{Argon2Params, HasherConfig, Policy};
use gateway::auth::revocation::Revocations;
use gateway::auth::service::{AuthService, ServiceSettings};
use gateway::auth::token::{self, AccessClaims, Algorithm, Keys, Subject, TokenSettings};
use gateway::clock::Clock;
use gateway::handler::policy::ForwardingPlan;
use gateway::proxy::headers::{self, IDENTITY_PREFIX};
use gateway::proxy::path;
use gateway::proxy::route::RouteTable;
use gateway::secret::{Secret, SecretString};
use gateway::store::Store;

const NOW: u64 = 1_700_000_000;

fn token_settings() -> TokenSettings {
    TokenSettings {
        issuer: "gateway".into(),
        audience: "gateway".into(),
        access_ttl: Duration::from_secs(900),
        leeway_secs: 5,
    }
}

fn subject_roles() -> Vec<String> {
    vec!["user".into()]
}

fn issue(keys: &Keys) -> String {
    let roles = subject_roles();
    let subject = Subject {
        user_id: "0b6f3c1e-6f2e-4a57-9a43-0c1c1f0e9d11",
        email: "ada@example.org",
        name: Some("Ada"),
        roles: &roles,
        email_verified: true,
        amr: &[],
        provider: None,
        session_id: "5e0b2f7a-3c1d-4f7e-8a9b-1d2c3e4f5a6b",
        session_version: 0,
    };
    keys.issue_access(&token_settings(), &subject, NOW)
        .unwrap()
        .0
}

fn eddsa_keys() -> Keys {
    let key = token::generate_ed25519(NOW).unwrap();
    let kid = key.kid.clone();
    Keys::eddsa(&[key], &kid).unwrap()
}

fn hs256_secret() -> Secret<Vec<u8>> {
    Secret::new(b"bench-secret-0123456789abcdef0123456789".to_vec())
}

/// Signature + structure + claims, no cache: what a miss costs.
fn verify_uncached(c: &mut Criterion) {
    let settings = token_settings();
    for (name, keys) in [
        ("verify_uncached/EdDSA", eddsa_keys()),
        (
            "verify_uncached/HS256",
            Keys::hs256(&hs256_secret()).unwrap(),
        ),
    ] {
        let t = issue(&keys);
        c.bench_function(name, |b| {
            b.iter(|| {
                keys.verify_access(&settings, black_box(&t), NOW + 1)
                    .unwrap()
            })
        });
    }
}

fn service(dir: &Path, algorithm: Algorithm) -> AuthService {
    let settings = ServiceSettings {
        issuer: "gateway".into(),
        audience: "gateway".into(),
        access_ttl: Duration::from_secs(900),
        refresh_ttl: Duration::from_secs(86_400),
        refresh_grace: Duration::from_secs(5),
        algorithm,
        hs256_secret: Some(hs256_secret()),
        default_roles: subject_roles(),
        signup_open: true,
        stale_after: None,
        refuse_when_stale: true,
        policy: Policy::default(),
        hasher: HasherConfig {
            params: Argon2Params {
                m_cost_kib: 1024,
                t_cost: 1,
                p_cost: 1,
            },
            ..HasherConfig::default()
        },
    };
    let store = Store::open(&dir.join("bench.redb")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(AuthService::open(settings, store, Clock::system()))
        .unwrap()
}

/// `AuthService::authenticate` as the proxy calls it: cache hit + expiry + revocation checks.
fn authenticate_cached(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, alg) in [
        ("authenticate_cached/EdDSA", Algorithm::EdDSA),
        ("authenticate_cached/HS256", Algorithm::HS256),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), alg);
        let pw = SecretString::new("correct horse battery staple".into());
        let issued = rt
            .block_on(svc.signup("ada@example.org", &pw, Some("Ada")))
            .unwrap();
        let t = issued.access_token.expose().clone();
        svc.authenticate(&t).unwrap();
        c.bench_function(name, |b| {
            b.iter(|| svc.authenticate(black_box(&t)).unwrap())
        });
    }
}

fn claims(jti: &str) -> AccessClaims {
    AccessClaims {
        sub: "0b6f3c1e-6f2e-4a57-9a43-0c1c1f0e9d11".into(),
        email: "ada@example.org".into(),
        name: None,
        roles: subject_roles(),
        email_verified: true,
        amr: Vec::new(),
        idp: None,
        sid: "5e0b2f7a-3c1d-4f7e-8a9b-1d2c3e4f5a6b".into(),
        sv: 0,
        iat: NOW,
        nbf: NOW,
        exp: NOW + 900,
        jti: jti.into(),
        iss: "gateway".into(),
        aud: "gateway".into(),
        identity: Default::default(),
    }
}

fn revocation_check(c: &mut Criterion) {
    let mut r = Revocations::default();
    for i in 0..1_000_000u32 {
        r.revoke_jti(&format!("{i:08x}-0000-4000-8000-000000000000"), NOW + 900);
    }
    let live = claims("7d3c2b1a-0000-4000-8000-ffffffffffff");
    let revoked = claims("0007a120-0000-4000-8000-000000000000");
    c.bench_function("revocation_check/1M_jtis/live", |b| {
        b.iter(|| r.check(black_box(&live)))
    });
    c.bench_function("revocation_check/1M_jtis/revoked", |b| {
        b.iter(|| r.check(black_box(&revoked)))
    });
}

fn route_matching(c: &mut Criterion) {
    let mut yaml = String::from("version: 1\nroutes:\n");
    for i in 0..99 {
        yaml.push_str(&format!(
            "  - {{name: r{i}, path: /app{i}/api, upstream: 'http://127.0.0.1:9000'}}\n"
        ));
    }
    yaml.push_str("  - {name: root, path: /, upstream: 'http://127.0.0.1:9000'}\n");
    let cfg = gateway::config::from_str(&yaml, "bench.yaml", Path::new("."), &|_| None).unwrap();
    let table = RouteTable::new(&cfg.routes);
    c.bench_function("route_match/100_routes/first", |b| {
        b.iter(|| table.find(None, &Method::GET, black_box("/app0/api/users/42")))
    });
    c.bench_function("route_match/100_routes/last", |b| {
        b.iter(|| table.find(None, &Method::GET, black_box("/static/app.js")))
    });

    // A large multi-tenant table: 100 hosts with 100 path prefixes each, then a catch-all.
    // `first` matches the first route; `last` is a request only the catch-all (the last of
    // 10,000 routes) takes, which a linear scan reaches by trying every route.
    let mut yaml = String::from("version: 1\nroutes:\n");
    for i in 0..9_999 {
        yaml.push_str(&format!(
            "  - {{name: r{i}, host: app{}.example.com, path: /svc{}/api, upstream: 'http://127.0.0.1:9000'}}\n",
            i / 100,
            i % 100
        ));
    }
    yaml.push_str("  - {name: root, path: /, upstream: 'http://127.0.0.1:9000'}\n");
    let cfg = gateway::config::from_str(&yaml, "bench.yaml", Path::new("."), &|_| None).unwrap();
    let table = RouteTable::new(&cfg.routes);
    let hit = table.find(Some("app0.example.com"), &Method::GET, "/svc0/api/users/42");
    assert_eq!(hit.unwrap().route.index, 0);
    let hit = table.find(Some("static.example.com"), &Method::GET, "/static/app.js");
    assert_eq!(hit.unwrap().route.index, 9_999);
    c.bench_function("route_match/10000_routes/first", |b| {
        b.iter(|| {
            table.find(
                black_box(Some("app0.example.com")),
                &Method::GET,
                black_box("/svc0/api/users/42"),
            )
        })
    });
    c.bench_function("route_match/10000_routes/last", |b| {
        b.iter(|| {
            table.find(
                black_box(Some("static.example.com")),
                &Method::GET,
                black_box("/static/app.js"),
            )
        })
    });
    c.bench_function("route_table_build/10000_routes", |b| {
        b.iter(|| RouteTable::new(black_box(&cfg.routes)))
    });
}

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        ),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-encoding", "gzip, deflate, br"),
        ("authorization", "Bearer xxxxx.yyyyy.zzzzz"),
        ("connection", "keep-alive"),
        ("x-auth-user-id", "admin"),
        ("x-forwarded-for", "203.0.113.9"),
    ] {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_static(v),
        );
    }
    h
}

fn header_rewriting(c: &mut Criterion) {
    let names = [
        HeaderName::from_static("x-auth-user-id"),
        HeaderName::from_static("x-auth-email"),
        HeaderName::from_static("x-auth-name"),
        HeaderName::from_static("x-auth-roles"),
    ];
    let base = request_headers();
    let untrusted = |_| false;
    let forwarded = ForwardingPlan::new(
        &base,
        "127.0.0.1".parse().unwrap(),
        &untrusted,
        false,
        Some(b"app.example.com"),
        false,
        &[],
    );
    c.bench_function("headers/strip_identity+forwarded+hop_by_hop", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| {
                headers::strip_identity(h, IDENTITY_PREFIX, &names);
                headers::remove_hop_by_hop(h);
                forwarded.apply(h);
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn path_normalisation(c: &mut Criterion) {
    c.bench_function("path/normalize/clean", |b| {
        b.iter(|| path::normalize(black_box("/app/api/v1/users/42/files")))
    });
    c.bench_function("path/normalize/dirty", |b| {
        b.iter(|| path::normalize(black_box("/app//api/./v1/%75sers/../users/42/files")))
    });
}

criterion_group!(
    benches,
    verify_uncached,
    authenticate_cached,
    revocation_check,
    route_matching,
    header_rewriting,
    path_normalisation
);
criterion_main!(benches);
