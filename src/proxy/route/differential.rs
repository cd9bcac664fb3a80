//! The index against the definition: generated route tables and requests, where
//! [`RouteTable::find`] (index, then the route rules on the candidates) must return exactly what
//! [`RouteTable::find_linear`] (every route in order) returns: the same route, the same matched
//! length and the same `{sub}` value.
//!
//! Tables draw from small vocabularies on purpose, so that prefixes share segments, routes
//! shadow and overlap each other, and the requests (with case changes, trailing dots, empty
//! segments and hosts around the wildcards) hit the edges of every rule.

use http::Method;

use super::{Matched, RouteTable};

/// splitmix64: deterministic, so a failure names a seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Route host patterns (`-` for none).
const ROUTE_HOSTS: &[&str] = &[
    "-",
    "-",
    "-",
    "a.example.com",
    "A.Example.com",
    "b.example.com",
    "example.com",
    "*.example.com",
    "*.a.example.com",
    "*.com",
];
/// Prefix segments as a config writes them (`...` is a legal segment that folds to nothing).
const ROUTE_SEGMENTS: &[&str] = &["a", "A", "a.", "b", "api", "Api..", "v1", "...", "x-1"];
const REQUEST_HOSTS: &[&str] = &[
    "a.example.com",
    "A.EXAMPLE.COM",
    "b.example.com",
    "x.a.example.com",
    "y.x.A.example.com",
    "example.com",
    ".example.com",
    "evilexample.com",
    "com",
    ".com",
    "a.example.com.",
    "é.example.com",
];
const REQUEST_SEGMENTS: &[&str] = &[
    "a", "A", "a.", "a..", "b", "B.", "api", "API", "api.", "Api", "v1", "V1.", "...", ".", "",
    "x-1", "X-1.", "u-1", "é", "admin",
];
const REQUEST_PATHS: &[&str] = &["", "/", "//", "x", "*", "/./", "/...", "/a//b"];

fn methods(rng: &mut Rng) -> Method {
    match rng.below(5) {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::PUT,
        3 => Method::DELETE,
        _ => Method::from_bytes(b"PURGE").unwrap(),
    }
}

/// A route table of 1 to 40 routes, as YAML run through the config's validation.
fn route_yaml(rng: &mut Rng) -> String {
    let mut yaml = String::from("version: 1\nroutes:\n");
    for i in 0..1 + rng.below(40) {
        let mut path = String::new();
        let mut owner = false;
        for _ in 0..rng.below(4) {
            path.push('/');
            if !owner && rng.chance(15) {
                owner = true;
                path.push_str("{sub}");
            } else {
                path.push_str(rng.pick(ROUTE_SEGMENTS));
            }
        }
        if path.is_empty() || rng.chance(10) {
            path.push('/');
        }
        yaml.push_str(&format!(
            "  - {{name: r{i}, path: '{path}', upstream: 'builtin:whoami'"
        ));
        let host = rng.pick(ROUTE_HOSTS);
        if host != "-" {
            yaml.push_str(&format!(", host: '{host}'"));
        }
        if rng.chance(30) {
            let list: Vec<String> = (0..1 + rng.below(3))
                .map(|_| methods(rng).as_str().to_owned())
                .collect();
            yaml.push_str(&format!(", methods: [{}]", list.join(", ")));
        }
        if rng.chance(30) {
            yaml.push_str(", case_sensitive: true");
        }
        yaml.push_str("}\n");
    }
    yaml
}

fn request_path(rng: &mut Rng) -> String {
    if rng.chance(5) {
        return rng.pick(REQUEST_PATHS).to_owned();
    }
    let mut path = String::new();
    for _ in 0..1 + rng.below(5) {
        path.push('/');
        path.push_str(rng.pick(REQUEST_SEGMENTS));
    }
    path
}

fn summary<'a>(m: &Option<Matched<'a>>) -> Option<(usize, usize, Option<&'a str>)> {
    m.as_ref()
        .map(|m| (m.route.index, m.path.len, m.path.owner))
}

#[test]
fn index_agrees_with_the_linear_scan() {
    let (mut requests, mut matched, mut later_wins) = (0, 0, 0);
    for seed in 0..400 {
        let mut rng = Rng(seed);
        let yaml = route_yaml(&mut rng);
        let cfg = crate::config::from_str(&yaml, "t.yaml", std::path::Path::new("."), &|_| None)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{yaml}"));
        let table = RouteTable::new(&cfg.routes);
        for _ in 0..300 {
            let host = (!rng.chance(15)).then(|| rng.pick(REQUEST_HOSTS));
            let method = methods(&mut rng);
            let path = request_path(&mut rng);
            let want = table.find_linear(host, &method, &path);
            let got = table.find(host, &method, &path);
            assert_eq!(
                summary(&got),
                summary(&want),
                "seed {seed}: {method} host {host:?} path {path:?} (route index, matched length, owner)\n{yaml}"
            );
            requests += 1;
            if let Some(m) = want {
                matched += 1;
                later_wins += usize::from(m.route.index > 0);
            }
        }
    }
    // The generator must keep producing requests that exercise the table, or this test would
    // pass by comparing `None` with `None`.
    assert!(matched * 3 > requests, "{matched} of {requests} matched");
    assert!(later_wins * 3 > matched, "{later_wins} of {matched}");
}

/// Validation only makes `*.name` wildcards; one without its dot (built some other way) cannot
/// be keyed by suffix and goes with the host-less routes, where it must neither be missed nor
/// shadow a host-less route of the same prefix.
#[test]
fn host_patterns_the_index_cannot_key_are_still_tried() {
    let yaml = "version: 1\nroutes:\n  - {path: /a, upstream: 'builtin:whoami'}\n  - {path: /a, upstream: 'builtin:whoami'}\n";
    let mut cfg =
        crate::config::from_str(yaml, "t.yaml", std::path::Path::new("."), &|_| None).unwrap();
    cfg.routes[0].host = Some(crate::config::HostPattern::Wildcard("example.com".into()));
    let table = RouteTable::new(&cfg.routes);
    for (host, want) in [
        (Some("evilexample.com"), Some(0)),
        (Some("other.org"), Some(1)),
        (None, Some(1)),
    ] {
        let got = table.find(host, &Method::GET, "/a/x");
        assert_eq!(got.as_ref().map(|m| m.route.index), want, "{host:?}");
        assert_eq!(
            summary(&got),
            summary(&table.find_linear(host, &Method::GET, "/a/x"))
        );
    }
}
