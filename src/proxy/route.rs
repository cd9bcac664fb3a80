//! The route table: compiled once from the config, matched per request.
//!
//! The first route in file order that matches wins. A route matches on an optional host
//! (exact or `*.suffix`), a segment-aware path prefix (`/admin` matches `/admin` and `/admin/x`,
//! never `/administrator`) and an optional method list. A path may bind one segment to the
//! caller's user id with `{sub}` (`/users/{sub}`): such a route matches any value there, and the
//! handler forwards only when the value equals the token's `sub` (user-data isolation at the
//! edge). Matching allocates nothing.
//!
//! Matching fails safe for upstreams that read paths loosely (IIS and ASP.NET ignore case and
//! trailing dots, as do some Spring and Express setups): unless a route says `case_sensitive`,
//! its prefix segments compare case-insensitively and a path segment's trailing dots are
//! ignored, so `/ADMIN`, `/Admin` and `/admin.` all fall under the `/admin` route rather than a
//! weaker catch-all. The `{sub}` owner segment compares the same way ([`Route::owned_by`]). The
//! path itself is not changed: the upstream gets it as the client sent it (after
//! normalisation).
//!
//! So that a request costs the same with ten routes or ten thousand, [`RouteTable::find`] does
//! not try the routes one by one: an [`index`] by host and path segments names the few routes
//! that could match, and each of those is checked with the rules above; the lowest position
//! wins. The index only narrows, so these rules stay the one definition of a match, and a test
//! compares it with a plain scan of the table on generated tables and requests.

#[cfg(test)]
mod differential;
mod index;

use std::sync::Arc;

use http::Method;

use crate::config::{HostPattern, RouteSpec};

/// A compiled route: the route as configured plus its precompiled path matcher.
#[derive(Debug)]
pub struct Route {
    /// Position in the route table (indexes per-route counters).
    pub index: usize,
    /// The route as configured (policy, upstream, options).
    pub spec: RouteSpec,
    /// `""` for the root route, else `/seg/...` without trailing slash.
    prefix: String,
    /// The prefix's segments, compared one by one when the path does not start with `prefix`
    /// as written (literals without trailing dots unless the route is case-sensitive).
    segments: Vec<Segment>,
    /// One of `segments` is `{sub}`.
    has_owner: bool,
}

/// One segment of a prefix with placeholders.
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{sub}`: any segment, which must equal the caller's user id.
    Owner,
}

/// How a route matched a path.
#[derive(Debug, Clone, Copy)]
pub struct PathMatch<'p> {
    /// Bytes of the path the prefix covered (what `strip_prefix` removes).
    pub len: usize,
    /// The value in the `{sub}` position, if the route has one.
    pub owner: Option<&'p str>,
}

/// A matched route.
#[derive(Debug, Clone)]
pub struct Matched<'p> {
    pub route: Arc<Route>,
    pub path: PathMatch<'p>,
}

impl Route {
    fn match_path<'p>(&self, path: &'p str) -> Option<PathMatch<'p>> {
        if self.prefix.is_empty() {
            // The root route, said without comparing "": that reaches `memcmp` with the empty
            // string's dangling pointer, and the AVX-512 `memcmp` of glibc then does a masked
            // load from an unmapped page, which costs a microcode assist on every request.
            return (path.is_empty() || path.starts_with('/')).then_some(PathMatch {
                len: 0,
                owner: None,
            });
        }
        // The usual case: the path starts with the prefix as written.
        if !self.has_owner {
            if let Some(rest) = path.strip_prefix(self.prefix.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return Some(PathMatch {
                    len: self.prefix.len(),
                    owner: None,
                });
            }
            if self.spec.case_sensitive {
                return None;
            }
        }
        let mut rest = path;
        let mut owner = None;
        for seg in &self.segments {
            let after = rest.strip_prefix('/')?;
            let end = after.find('/').unwrap_or(after.len());
            let value = after.get(..end)?;
            match seg {
                Segment::Literal(l) if self.same_segment(l, value) => {}
                Segment::Owner if !value.is_empty() => owner = Some(value),
                _ => return None,
            }
            rest = after.get(end..)?;
        }
        (rest.is_empty() || rest.starts_with('/')).then_some(PathMatch {
            len: path.len() - rest.len(),
            owner,
        })
    }

    /// Whether a path segment is a prefix segment `want`: exactly on a case-sensitive route,
    /// else case-insensitively and without the segment's trailing dots.
    fn same_segment(&self, want: &str, got: &str) -> bool {
        if self.spec.case_sensitive {
            want == got
        } else {
            got.trim_end_matches('.').eq_ignore_ascii_case(want)
        }
    }

    /// Whether the `{sub}` segment's value names the user `sub`, compared as the route compares
    /// its other segments (so `/users/U-1.` is user `u-1`'s path unless the route is
    /// case-sensitive).
    pub fn owned_by(&self, owner: &str, sub: &str) -> bool {
        self.same_segment(sub, owner)
    }

    /// Whether the route takes a request, and how its path matched.
    fn matches<'p>(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &'p str,
    ) -> Option<PathMatch<'p>> {
        if !self.matches_host(host) || !self.matches_method(method) {
            return None;
        }
        self.match_path(path)
    }

    fn matches_host(&self, host: Option<&str>) -> bool {
        match (&self.spec.host, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(HostPattern::Exact(want)), Some(h)) => want.eq_ignore_ascii_case(h),
            (Some(HostPattern::Wildcard(suffix)), Some(h)) => {
                h.len() > suffix.len()
                    && h.get(h.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }

    fn matches_method(&self, method: &Method) -> bool {
        self.spec
            .methods
            .as_ref()
            .is_none_or(|m| m.contains(method))
    }

    /// The path to send upstream: the normalised request path, minus the matched prefix when
    /// `strip_prefix` is set (never empty: at least `/`).
    pub fn upstream_path<'a>(&self, path: &'a str, matched: &PathMatch<'_>) -> &'a str {
        if !self.spec.strip_prefix {
            return path;
        }
        match path.get(matched.len..) {
            Some("") | None => "/",
            Some(rest) => rest,
        }
    }
}

/// Every route, in order, and their index.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    index: index::Index,
}

impl RouteTable {
    /// Compiles the routes of a validated config.
    pub fn new(specs: &[RouteSpec]) -> Self {
        let routes = specs
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let prefix = if s.path == "/" {
                    String::new()
                } else {
                    s.path.clone()
                };
                let segments = prefix
                    .split('/')
                    .skip(1)
                    .map(|seg| match seg {
                        "{sub}" => Segment::Owner,
                        lit if s.case_sensitive => Segment::Literal(lit.to_owned()),
                        lit => Segment::Literal(lit.trim_end_matches('.').to_owned()),
                    })
                    .collect();
                Arc::new(Route {
                    index,
                    spec: s.clone(),
                    has_owner: s.path.contains("{sub}"),
                    prefix,
                    segments,
                })
            })
            .collect();
        RouteTable {
            routes,
            index: index::Index::new(specs),
        }
    }

    /// The first route matching a request. `host` is the request host without port, `path` the
    /// normalised path.
    pub fn find<'p>(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &'p str,
    ) -> Option<Matched<'p>> {
        let mut best: Option<(&Arc<Route>, PathMatch<'p>)> = None;
        self.index.candidates(host, path, &mut |position| {
            if best.is_some_and(|(b, _)| b.index <= position) {
                // Candidates of one index node come in order: the rest of it cannot win either.
                return true;
            }
            let Some(route) = self.routes.get(position) else {
                return false;
            };
            match route.matches(host, method, path) {
                Some(m) => {
                    best = Some((route, m));
                    true
                }
                None => false,
            }
        });
        best.map(|(route, path)| Matched {
            route: route.clone(),
            path,
        })
    }

    /// [`RouteTable::find`] by trying every route in order: the definition the index must
    /// agree with.
    #[cfg(test)]
    fn find_linear<'p>(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &'p str,
    ) -> Option<Matched<'p>> {
        self.routes.iter().find_map(|r| {
            r.matches(host, method, path).map(|m| Matched {
                route: r.clone(),
                path: m,
            })
        })
    }

    /// All routes, for `gateway check`.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The route's written path prefix (`/` for the root route).
    pub fn prefix_of(route: &Route) -> &str {
        if route.prefix.is_empty() {
            "/"
        } else {
            &route.prefix
        }
    }

    /// Describes a route's host and methods for `gateway check`.
    pub fn describe(route: &Route) -> String {
        let host = route
            .spec
            .host
            .as_ref()
            .map_or_else(|| "*".to_owned(), ToString::to_string);
        let methods = route.spec.methods.as_ref().map_or_else(
            || "any".to_owned(),
            |m| m.iter().map(Method::as_str).collect::<Vec<_>>().join(","),
        );
        format!("host={host} methods={methods}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml_routes: &str) -> RouteTable {
        let yaml = format!("version: 1\nroutes:\n{yaml_routes}");
        let cfg =
            crate::config::from_str(&yaml, "t.yaml", std::path::Path::new("."), &|_| None).unwrap();
        RouteTable::new(&cfg.routes)
    }

    fn name(t: &RouteTable, host: Option<&str>, m: Method, p: &str) -> Option<&'static str> {
        // Route names in these tests are string literals; leak the few bytes for easy asserts.
        t.find(host, &m, p)
            .map(|r| &*Box::leak(r.route.spec.name.clone().into_boxed_str()))
    }

    #[test]
    fn prefixes_are_segment_aware_and_first_match_wins() {
        let t = table(
            "  - {name: admin, path: /admin, upstream: 'builtin:whoami'}\n  - {name: root, path: /, upstream: 'builtin:whoami'}\n",
        );
        assert_eq!(name(&t, None, Method::GET, "/admin"), Some("admin"));
        assert_eq!(name(&t, None, Method::GET, "/admin/"), Some("admin"));
        assert_eq!(name(&t, None, Method::GET, "/admin/x"), Some("admin"));
        assert_eq!(name(&t, None, Method::GET, "/administrator"), Some("root"));
        assert_eq!(name(&t, None, Method::GET, "/administrator."), Some("root"));
        assert_eq!(name(&t, None, Method::GET, "/"), Some("root"));
    }

    #[test]
    fn prefixes_ignore_case_and_trailing_dots_unless_case_sensitive() {
        let t = table(
            "  - {name: admin, path: /admin/panel, strip_prefix: true, upstream: 'builtin:whoami'}\n  - {name: exact, path: /Exact, case_sensitive: true, upstream: 'builtin:whoami'}\n  - {name: root, path: /, upstream: 'builtin:whoami'}\n",
        );
        for p in [
            "/ADMIN/panel",
            "/Admin/Panel/x",
            "/admin./panel",
            "/admin/panel..",
            "/admin.../PANEL./x",
        ] {
            let m = t.find(None, &Method::GET, p).unwrap();
            assert_eq!(m.route.spec.name, "admin", "{p}");
            // `strip_prefix` removes the segments as the client wrote them.
            assert!(
                m.route.upstream_path(p, &m.path) == "/x"
                    || m.route.upstream_path(p, &m.path) == "/",
                "{p}"
            );
        }
        for p in [
            "/adminx/panel",
            "/admin/panelx",
            "/admin",
            "/admin/.panel",
            "/admin-/panel",
        ] {
            assert_eq!(name(&t, None, Method::GET, p), Some("root"), "{p}");
        }
        assert_eq!(name(&t, None, Method::GET, "/Exact/x"), Some("exact"));
        for p in ["/exact", "/EXACT", "/Exact.", "/Exact./x"] {
            assert_eq!(name(&t, None, Method::GET, p), Some("root"), "{p}");
        }
    }

    #[test]
    fn hosts_and_methods() {
        let t = table(
            "  - {name: api, host: api.example.com, path: /, methods: [POST], upstream: 'builtin:whoami'}\n  - {name: wild, host: '*.example.com', path: /, upstream: 'builtin:whoami'}\n",
        );
        assert_eq!(
            name(&t, Some("API.example.com"), Method::POST, "/x"),
            Some("api")
        );
        assert_eq!(
            name(&t, Some("api.example.com"), Method::GET, "/x"),
            Some("wild")
        );
        assert_eq!(
            name(&t, Some("a.b.example.com"), Method::GET, "/"),
            Some("wild")
        );
        assert_eq!(name(&t, Some("example.com"), Method::GET, "/"), None);
        assert_eq!(name(&t, Some("evilexample.com"), Method::GET, "/"), None);
        assert_eq!(name(&t, None, Method::GET, "/"), None);
    }

    #[test]
    fn strip_prefix() {
        let t = table("  - {path: /app, strip_prefix: true, upstream: 'builtin:whoami'}\n");
        for (path, up) in [("/app/x/y", "/x/y"), ("/app", "/"), ("/app/", "/")] {
            let m = t.find(None, &Method::GET, path).unwrap();
            assert_eq!(m.route.upstream_path(path, &m.path), up);
        }
    }

    #[test]
    fn owner_segment() {
        let t = table(
            "  - {name: mine, path: '/users/{sub}/files', strip_prefix: true, upstream: 'builtin:whoami'}\n  - {name: root, path: /, upstream: 'builtin:whoami'}\n",
        );
        let m = t
            .find(None, &Method::GET, "/users/u-1/files/a.txt")
            .unwrap();
        assert_eq!(m.route.spec.name, "mine");
        assert_eq!(m.path.owner, Some("u-1"));
        assert_eq!(
            m.route.upstream_path("/users/u-1/files/a.txt", &m.path),
            "/a.txt"
        );
        assert_eq!(
            name(&t, None, Method::GET, "/users/u-1/filesx"),
            Some("root")
        );
        assert_eq!(name(&t, None, Method::GET, "/users//files"), Some("root"));
        assert_eq!(name(&t, None, Method::GET, "/users/u-1"), Some("root"));
        // The literal segments and the owner compare loosely too.
        let m = t.find(None, &Method::GET, "/Users/U-1./FILES.").unwrap();
        assert_eq!(m.route.spec.name, "mine");
        assert_eq!(m.path.owner, Some("U-1."));
        assert!(m.route.owned_by("U-1.", "u-1"));
        assert!(!m.route.owned_by("u-2", "u-1"));
        assert!(!m.route.owned_by("u-1x", "u-1"));
        assert!(!m.route.owned_by("...", "u-1"));
        let t = table(
            "  - {name: mine, path: '/users/{sub}', case_sensitive: true, upstream: 'builtin:whoami'}\n  - {name: root, path: /, upstream: 'builtin:whoami'}\n",
        );
        assert_eq!(name(&t, None, Method::GET, "/Users/u-1"), Some("root"));
        let m = t.find(None, &Method::GET, "/users/U-1").unwrap();
        assert!(!m.route.owned_by(m.path.owner.unwrap(), "u-1"));
        assert!(m.route.owned_by("u-1", "u-1"));
    }
}
