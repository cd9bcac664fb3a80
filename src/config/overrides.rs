//! Environment overrides: `GATEWAY_<PATH>=value` replaces one value of the config file.
//!
//! The rule: a variable is an override when its name starts with `GATEWAY_` and the rest either
//! contains `__` or is a top-level key (`GATEWAY_SHUTDOWN_GRACE`). The rest is the key path,
//! upper-cased, with `__` between keys and `_` for `-`: `GATEWAY_AUTH__ACCESS_TTL` is
//! `auth.access_ttl`, `GATEWAY_ROUTES__0__UPSTREAM` is `routes[0].upstream`. The index one past
//! the end of a list adds an entry (`GATEWAY_ROUTES__2__PATH` with two routes in the file); a
//! gap is refused. Anything else under `GATEWAY_` (`GATEWAY_CONFIG`, `GATEWAY_JWT_SECRET` used through
//! `${...}`) is left alone, and so is `GATEWAY_VERSION`: `version` belongs to the file.
//!
//! Values are YAML (`true`, `8`, `null`, `[admin, ops]`); an empty value is `null`. Secrets
//! (`auth.jwt_secret`) are taken literally, so a `#` or a leading `&` cannot change them.
//!
//! How: the file is read into a generic tree that keeps every node's line, the overrides are
//! applied to the tree, and the tree is written back out as YAML while recording where each
//! output line came from (a file line or a variable). The raw structs are then read from that
//! text, so a misspelt key or a value of the wrong kind is caught by the same `deny_unknown_fields`
//! structs as in the file, and every error is mapped back to the file's line or to the variable.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// What every override variable's name starts with.
pub const PREFIX: &str = "GATEWAY_";

/// Top-level keys a variable without `__` may name (every key of the file except `version`).
const TOP_LEVEL: &[&str] = &[
    "listen",
    "tls",
    "trusted_proxies",
    "limits",
    "upstream",
    "shutdown_grace",
    "shutdown_delay",
    "health",
    "log",
    "store",
    "auth",
    "cors",
    "rate_limits",
    "regulation",
    "routes",
    "email",
];

/// Keys whose override is taken literally rather than parsed as YAML.
const LITERAL: &[&str] = &["auth.jwt_secret", "email.password"];

/// Where a line of the merged text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// A line of the file (0 when unknown).
    File(u64),
    /// The value of this environment variable.
    Env(String),
}

/// One `GATEWAY_...` variable that is an override.
#[derive(Debug, Clone)]
pub(super) struct Override {
    pub var: String,
    /// Upper-case segments, e.g. `["AUTH", "ACCESS_TTL"]`.
    segments: Vec<String>,
    value: String,
}

impl Override {
    /// The key path as the rest of the config names it (`routes[0].upstream`).
    fn key(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            if s.bytes().all(|b| b.is_ascii_digit()) {
                out.push_str(&format!("[{s}]"));
            } else {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&s.to_ascii_lowercase());
            }
        }
        out
    }
}

/// An override that cannot be applied, before it is turned into a `ConfigError`.
#[derive(Debug)]
pub(super) struct OverrideError {
    pub var: String,
    pub key: String,
    pub message: String,
}

/// Picks the overrides out of all environment variables, sorted by key path so a whole section
/// (`GATEWAY_AUTH`) is applied before a key inside it (`GATEWAY_AUTH__SIGNUP`) and list entries
/// are added in index order.
pub(super) fn select(vars: &[(String, String)]) -> Vec<Override> {
    let mut out: Vec<Override> = vars
        .iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(PREFIX)?;
            let top = rest.to_ascii_lowercase();
            if !rest.contains("__") && !TOP_LEVEL.contains(&top.as_str()) {
                return None;
            }
            Some(Override {
                var: name.clone(),
                segments: rest.split("__").map(str::to_owned).collect(),
                value: value.clone(),
            })
        })
        .collect();
    // Key by key, indexes by number: routes 2..=10 are added in order (10 after 9, not after 1).
    out.sort_by(|a, b| {
        let key = |o: &Override| -> Vec<(u64, String)> {
            o.segments
                .iter()
                .map(|s| match s.parse::<u64>() {
                    Ok(n) => (n, String::new()),
                    Err(_) => (u64::MAX, s.clone()),
                })
                .collect()
        };
        key(a).cmp(&key(b)).then_with(|| a.var.cmp(&b.var))
    });
    out
}

/// A YAML node as read, before its origin is known.
enum Raw {
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
    Seq(Vec<Spanned<Raw>>),
    Str(String),
    /// A number or boolean, in canonical form.
    Other(String),
    Null,
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Other(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Other(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Other(v.to_string()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Other(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw::Other(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Other(if v.is_nan() {
            ".nan".to_owned()
        } else if v.is_infinite() {
            if v > 0.0 { ".inf" } else { "-.inf" }.to_owned()
        } else {
            format!("{v:?}")
        }))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Raw::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<Spanned<String>>()? {
            let v = map.next_value()?;
            out.push((k, v));
        }
        Ok(Raw::Map(out))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Raw, E> {
        Err(E::custom("binary values are not supported"))
    }
}

/// A YAML node with the origin of each key and item.
enum Node {
    Map(Vec<Entry>),
    Seq(Vec<Item>),
    /// The text to write out (a plain scalar as written, or a double-quoted string).
    Scalar {
        text: String,
        null: bool,
    },
}

struct Entry {
    key: String,
    origin: Origin,
    value: Node,
}

struct Item {
    origin: Origin,
    value: Node,
}

impl Node {
    fn null() -> Node {
        Node::Scalar {
            text: "null".to_owned(),
            null: true,
        }
    }

    fn string(s: &str) -> Node {
        Node::Scalar {
            text: quote(s),
            null: false,
        }
    }
}

fn quote(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Converts what serde read, taking plain scalars verbatim from `src` so they are read back
/// exactly as they would have been from the file (`0x1f`, `yes`, `1_000`).
fn node(raw: Spanned<Raw>, src: &str, origin: &dyn Fn(u64) -> Origin) -> Node {
    let span = raw.referenced.span();
    let verbatim = span.byte_offset().zip(span.byte_len()).and_then(|(o, l)| {
        let start = usize::try_from(o).ok()?;
        let end = start.checked_add(usize::try_from(l).ok()?)?;
        let text = src.get(start..end)?;
        let plain = !text.is_empty()
            && !text.contains(['\n', '\r'])
            && !text.starts_with(['"', '\'', '|', '>', '&', '*', '!', '[', '{']);
        plain.then(|| text.to_owned())
    });
    match raw.value {
        Raw::Map(entries) => Node::Map(
            entries
                .into_iter()
                .map(|(k, v)| Entry {
                    origin: origin(k.referenced.line()),
                    key: k.value,
                    value: node(v, src, origin),
                })
                .collect(),
        ),
        Raw::Seq(items) => Node::Seq(
            items
                .into_iter()
                .map(|v| Item {
                    origin: origin(v.referenced.line()),
                    value: node(v, src, origin),
                })
                .collect(),
        ),
        Raw::Null => Node::null(),
        Raw::Str(s) => match verbatim {
            Some(text) => Node::Scalar { text, null: false },
            None => Node::string(&s),
        },
        Raw::Other(canonical) => Node::Scalar {
            text: verbatim.unwrap_or(canonical),
            null: false,
        },
    }
}

/// The merged config text and the origin of each of its lines (index 0 is line 1).
pub(super) struct Merged {
    pub text: String,
    pub lines: Vec<Origin>,
}

impl Merged {
    /// Where line `line` (1-based) of the merged text came from.
    pub fn origin(&self, line: u64) -> Origin {
        usize::try_from(line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|i| self.lines.get(i))
            .cloned()
            .unwrap_or(Origin::File(0))
    }
}

/// Reads `text` as YAML, applies `overrides` and writes the result back out. A YAML syntax error
/// in the file is returned as-is (it carries the file's line).
pub(super) fn merge(
    text: &str,
    overrides: &[Override],
) -> Result<Result<Merged, OverrideError>, serde_saphyr::Error> {
    let raw: Spanned<Raw> = serde_saphyr::from_str(text)?;
    let mut root = node(raw, text, &Origin::File);
    for o in overrides {
        if let Err(e) = apply(&mut root, o) {
            return Ok(Err(e));
        }
    }
    let mut out = Merged {
        text: String::new(),
        lines: Vec::new(),
    };
    match &root {
        Node::Scalar { text, .. } => push_line(&mut out, 0, text, Origin::File(1)),
        other => emit(&mut out, other, 0),
    }
    Ok(Ok(out))
}

fn apply(root: &mut Node, o: &Override) -> Result<(), OverrideError> {
    let fail = |message: String| OverrideError {
        var: o.var.clone(),
        key: o.key(),
        message,
    };
    if o.segments.iter().any(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    }) {
        return Err(fail(
            "malformed name: write the key path in capitals with __ between keys, like GATEWAY_AUTH__ACCESS_TTL".to_owned(),
        ));
    }
    let value = value_node(o).map_err(&fail)?;
    let env = Origin::Env(o.var.clone());
    let mut current = root;
    let mut here = String::new();
    let last = o.segments.len() - 1;
    for (i, seg) in o.segments.iter().enumerate() {
        let is_last = i == last;
        // Descending into a null (`tls:` with only comments under it) makes it a section.
        if matches!(current, Node::Scalar { null: true, .. }) {
            *current = if seg.bytes().all(|b| b.is_ascii_digit()) {
                Node::Seq(Vec::new())
            } else {
                Node::Map(Vec::new())
            };
        }
        match current {
            Node::Map(entries) => {
                let key = seg.to_ascii_lowercase();
                here = if here.is_empty() {
                    key.clone()
                } else {
                    format!("{here}.{key}")
                };
                let pos = entries
                    .iter()
                    .position(|e| e.key.to_ascii_uppercase().replace('-', "_") == *seg);
                let pos = match pos {
                    Some(p) => p,
                    None => {
                        entries.push(Entry {
                            key,
                            origin: env.clone(),
                            value: Node::null(),
                        });
                        entries.len() - 1
                    }
                };
                let Some(entry) = entries.get_mut(pos) else {
                    return Err(fail("internal error".to_owned()));
                };
                if is_last {
                    entry.origin = env.clone();
                    entry.value = value;
                    return Ok(());
                }
                current = &mut entry.value;
            }
            Node::Seq(items) => {
                let Ok(index) = seg.parse::<usize>() else {
                    return Err(fail(format!(
                        "{here} is a list: name an entry by its index, like {}{}__0__...",
                        PREFIX,
                        here.to_ascii_uppercase().replace('.', "__")
                    )));
                };
                let len = items.len();
                let list = here.clone();
                here = format!("{here}[{index}]");
                // The next index adds an entry (a route, say); a gap would leave entries
                // undefined, so it is refused.
                if index == len {
                    items.push(Item {
                        origin: env.clone(),
                        value: Node::null(),
                    });
                }
                let Some(item) = items.get_mut(index) else {
                    return Err(fail(format!(
                        "there is no {here}: {list} has {len} entries, so the next one to add is {}{}__{len}__...",
                        PREFIX,
                        list.to_ascii_uppercase().replace('.', "__")
                    )));
                };
                if is_last {
                    item.origin = env.clone();
                    item.value = value;
                    return Ok(());
                }
                current = &mut item.value;
            }
            Node::Scalar { .. } => {
                return Err(fail(format!("{here} is a single value, not a section")));
            }
        }
    }
    Ok(())
}

/// The override's value as a node: YAML, or literal text for secrets; empty is null.
fn value_node(o: &Override) -> Result<Node, String> {
    if o.value.trim().is_empty() {
        return Ok(Node::null());
    }
    if LITERAL.contains(&o.key().as_str()) {
        return Ok(Node::string(&o.value));
    }
    let raw: Spanned<Raw> = serde_saphyr::from_str(&o.value)
        .map_err(|e| format!("not a YAML value ({}); quote it", without_location(&e)))?;
    let env = Origin::Env(o.var.clone());
    let n = node(raw, &o.value, &|_| env.clone());
    // `abc #1` is the string `abc` and `#1` is null to YAML: refuse rather than lose the rest.
    let trimmed = o.value.trim();
    if let Node::Scalar { text, null } = &n
        && !trimmed.starts_with(['"', '\''])
    {
        let exact = if *null {
            ["null", "Null", "NULL", "~"].contains(&trimmed)
        } else {
            text == trimmed
        };
        if !exact {
            return Err(
                "YAML reads only part of this value (` #` starts a comment); quote it".to_owned(),
            );
        }
    }
    Ok(n)
}

fn push_line(out: &mut Merged, indent: usize, content: &str, origin: Origin) {
    out.text.extend(std::iter::repeat_n(' ', indent));
    out.text.push_str(content);
    out.text.push('\n');
    out.lines.push(origin);
}

/// Writes a node in block style, one key or item per line.
fn emit(out: &mut Merged, n: &Node, indent: usize) {
    match n {
        Node::Map(entries) => {
            for e in entries {
                let key = quote(&e.key);
                match inline(&e.value) {
                    Some(text) => {
                        push_line(out, indent, &format!("{key}: {text}"), e.origin.clone())
                    }
                    None => {
                        push_line(out, indent, &format!("{key}:"), e.origin.clone());
                        emit(out, &e.value, indent + 2);
                    }
                }
            }
        }
        Node::Seq(items) => {
            for i in items {
                match inline(&i.value) {
                    Some(text) => push_line(out, indent, &format!("- {text}"), i.origin.clone()),
                    None => {
                        push_line(out, indent, "-", i.origin.clone());
                        emit(out, &i.value, indent + 2);
                    }
                }
            }
        }
        Node::Scalar { .. } => {}
    }
}

/// A scalar or an empty collection, written on the line of its key.
fn inline(n: &Node) -> Option<&str> {
    match n {
        Node::Scalar { text, .. } => Some(text),
        Node::Map(e) if e.is_empty() => Some("{}"),
        Node::Seq(i) if i.is_empty() => Some("[]"),
        _ => None,
    }
}

/// A serde-saphyr error's message without its `at line ..., column ...` part (the line is that
/// of the merged text, which means nothing to the user).
pub(super) fn without_location(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    match text.rfind(" at line ").and_then(|i| text.get(..i)) {
        Some(head) => head.to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{AuthPolicy, Config, ConfigError, LogFormat, Signup, from_str_with_env};

    const FILE: &str = "version: 1\n\
        listen:\n  http: 127.0.0.1:8080\n\
        auth:\n  access_ttl: 15m\n\
        routes:\n  - path: /a\n    upstream: builtin:whoami\n    auth: public\n  - {path: /, upstream: 'http://127.0.0.1:3000'}\n";

    fn load_in(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        from_str_with_env(yaml, "gateway.yaml", Path::new("/base"), &vars)
    }

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_in(FILE, vars)
    }

    #[test]
    fn scalars_replace_file_values_and_fill_in_defaults() {
        let c = load(&[
            ("GATEWAY_LISTEN__HTTP", "0.0.0.0:9090"),
            ("GATEWAY_AUTH__ACCESS_TTL", "5m"),
            ("GATEWAY_LOG__FORMAT", "json"),
            ("GATEWAY_AUTH__SIGNUP", "closed"),
            ("GATEWAY_AUTH__TOKENS_IN_BODY", "false"),
            ("GATEWAY_LIMITS__MAX_HEADERS", "50"),
            ("GATEWAY_SHUTDOWN_GRACE", "3s"),
            ("GATEWAY_LISTEN__HTTPS", "null"),
        ])
        .unwrap();
        assert_eq!(c.listen.http, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(c.listen.https, None);
        assert_eq!(c.auth.access_ttl, Duration::from_secs(300));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.auth.signup, Signup::Closed);
        assert!(!c.auth.tokens_in_body);
        assert_eq!(c.limits.max_headers, 50);
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        assert_eq!(c.env_overrides.len(), 8);
        assert_eq!(c.env_overrides[0], "GATEWAY_AUTH__ACCESS_TTL");
        // The rest of the file is untouched.
        assert_eq!(c.routes.len(), 2);
    }

    #[test]
    fn nested_keys_lists_and_route_indexes() {
        let c = load(&[
            ("GATEWAY_STORE__REDB__PATH", "/data/gateway.redb"),
            ("GATEWAY_AUTH__DEFAULT_ROLES", "[admin, ops]"),
            ("GATEWAY_AUTH__PASSWORD__MIN_LENGTH", "12"),
            ("GATEWAY_TRUSTED_PROXIES", "[10.0.0.0/8]"),
            ("GATEWAY_ROUTES__1__UPSTREAM", "http://app:80"),
            ("GATEWAY_ROUTES__1__ROLES", "[admin]"),
            ("GATEWAY_ROUTES__0__AUTH", "required"),
        ])
        .unwrap();
        let crate::config::StoreSettings::Redb { path } = &c.store else {
            panic!("expected a redb store")
        };
        assert_eq!(path, Path::new("/data/gateway.redb"));
        assert_eq!(c.auth.default_roles, ["admin", "ops"]);
        assert_eq!(c.auth.password.min_length, 12);
        assert_eq!(c.trusted_proxies.len(), 1);
        assert_eq!(c.routes[1].upstream.to_string(), "http://app:80");
        assert_eq!(
            c.routes[1].policy,
            AuthPolicy::Required {
                roles: vec!["admin".into()]
            }
        );
        assert_eq!(c.routes[0].policy, AuthPolicy::Required { roles: vec![] });
    }

    #[test]
    fn the_next_index_adds_a_route_and_a_gap_is_refused() {
        // FILE has two routes, the second a catch-all: the first added route takes its place
        // and the catch-all moves to the end, as the README describes.
        let c = load(&[
            ("GATEWAY_ROUTES__1__PATH", "/api"),
            ("GATEWAY_ROUTES__1__UPSTREAM", "http://api:8000"),
            ("GATEWAY_ROUTES__1__AUTH", "public"),
            ("GATEWAY_ROUTES__2__PATH", "/"),
            ("GATEWAY_ROUTES__2__UPSTREAM", "http://127.0.0.1:3000"),
            (
                "GATEWAY_ROUTES__3",
                "{path: /x, upstream: 'builtin:whoami', roles: [admin]}",
            ),
        ])
        .unwrap();
        assert_eq!(c.routes.len(), 4);
        assert_eq!(c.routes[1].upstream.to_string(), "http://api:8000");
        assert_eq!(c.routes[1].policy, AuthPolicy::Public);
        assert_eq!(c.routes[2].policy, AuthPolicy::Required { roles: vec![] });
        assert_eq!(
            c.routes[3].policy,
            AuthPolicy::Required {
                roles: vec!["admin".into()]
            }
        );
        assert!(c.env_overrides.contains(&"GATEWAY_ROUTES__3".to_owned()));

        // Indexes count as numbers: 2..=11 are added in order.
        let names: Vec<(String, String)> = (2..=11)
            .flat_map(|i| {
                [
                    (format!("GATEWAY_ROUTES__{i}__PATH"), format!("/r{i}")),
                    (
                        format!("GATEWAY_ROUTES__{i}__UPSTREAM"),
                        "builtin:whoami".into(),
                    ),
                ]
            })
            .collect();
        let vars: Vec<(&str, &str)> = names
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let c = load(&vars).unwrap();
        assert_eq!(c.routes.len(), 12);
        assert_eq!(c.routes[11].name, "/r11");

        // An added route is checked like one in the file.
        let e = load(&[("GATEWAY_ROUTES__2__PATH", "/no-upstream")]).unwrap_err();
        assert!(e.to_string().contains("routes[2]"), "{e}");
        assert!(e.to_string().contains("GATEWAY_ROUTES__2__PATH"), "{e}");
        // A gap says which index comes next.
        let e = load(&[("GATEWAY_ROUTES__3__PATH", "/x")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("routes has 2 entries, so the next one to add is GATEWAY_ROUTES__2__..."),
            "{e}"
        );
    }

    #[test]
    fn a_section_left_empty_in_the_file_can_be_filled() {
        let c = load_in(
            "version: 1\ntls:\n  # nothing yet\n",
            &[("GATEWAY_TLS__HSTS_MAX_AGE", "1d")],
        )
        .unwrap();
        assert_eq!(c.tls.hsts_max_age, Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn other_gateway_variables_are_not_overrides() {
        let c = load(&[
            ("GATEWAY_CONFIG", "/etc/gateway/gateway.yaml"),
            ("GATEWAY_JWT_SECRET", "x"),
            ("GATEWAY_VERSION", "1.2.3"),
            ("HOME", "/root"),
        ])
        .unwrap();
        assert!(c.env_overrides.is_empty());
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_the_variable() {
        for (var, key) in [
            ("GATEWAY_AUTH__ACESS_TTL", "auth.acess_ttl"),
            ("GATEWAY_LISTN__HTTP", "listn"),
            ("GATEWAY_ROUTES__0__UPSTREEM", "routes[0].upstreem"),
        ] {
            let e = load(&[(var, "5m")]).unwrap_err();
            assert!(
                matches!(&e, ConfigError::FromEnv { var: v, .. } if v == var),
                "{var}: {e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains(key), "{msg}");
            assert!(msg.ends_with(&format!("(from {var})")), "{msg}");
        }
        // Names the rule cannot map are errors too, not silently ignored.
        for var in [
            "GATEWAY_ROUTES__7__PATH",
            "GATEWAY_ROUTES__3__PATH",
            "GATEWAY_ROUTES__X__PATH",
            "GATEWAY_AUTH__",
            "GATEWAY_auth__signup",
            "GATEWAY_LOG__FORMAT__X",
        ] {
            let e = load(&[(var, "x")]).unwrap_err();
            assert!(
                matches!(&e, ConfigError::FromEnv { var: v, .. } if v == var),
                "{var}: {e:?}"
            );
        }
    }

    #[test]
    fn a_bad_value_names_the_variable_and_file_errors_keep_their_line() {
        let e = load(&[("GATEWAY_AUTH__ACCESS_TTL", "2d")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "auth.access_ttl: 2d is out of range (1m to 1day) (from GATEWAY_AUTH__ACCESS_TTL)"
        );
        let e = load(&[("GATEWAY_LIMITS__MAX_HEADERS", "many")]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::FromEnv { var, key, .. } if var == "GATEWAY_LIMITS__MAX_HEADERS" && key == "limits.max_headers"),
            "{e:?}"
        );
        let e = load(&[("GATEWAY_AUTH__DEFAULT_ROLES", "[a, b")]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::FromEnv { var, .. } if var == "GATEWAY_AUTH__DEFAULT_ROLES"),
            "{e:?}"
        );

        // With overrides present, problems in the file still point at its lines.
        let bad_file =
            "version: 1\nlisten:\n  http: nowhere\nroutes:\n  - path: /\n    upstream: ftp://x\n";
        let e = load_in(bad_file, &[("GATEWAY_LOG__FORMAT", "json")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "gateway.yaml:3: listen.http: invalid address \"nowhere\"; write it like 127.0.0.1:8080 or [::]:8443"
        );
        let e = load_in(bad_file, &[("GATEWAY_LISTEN__HTTP", "127.0.0.1:1")]).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { line: 6, .. }), "{e:?}");
        let e = load_in(
            "version: 1\nlog:\n  formt: json\n",
            &[("GATEWAY_LOG__LEVEL", "debug")],
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
        assert!(msg.contains("log.formt") && msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn secrets_are_literal_and_never_shown() {
        let secret = "s3cret #not-a-comment &and-no-anchor-0123456789abcdef";
        let c = load(&[
            ("GATEWAY_AUTH__ALGORITHM", "HS256"),
            ("GATEWAY_AUTH__JWT_SECRET", secret),
        ])
        .unwrap();
        assert_eq!(
            c.auth.jwt_secret.as_ref().unwrap().expose().as_slice(),
            secret.as_bytes()
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        // A short secret is refused without echoing it.
        let e = load(&[
            ("GATEWAY_AUTH__ALGORITHM", "HS256"),
            ("GATEWAY_AUTH__JWT_SECRET", "short-s3cret"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("GATEWAY_AUTH__JWT_SECRET") && !e.contains("short-s3cret"),
            "{e}"
        );
    }

    #[test]
    fn secret_files_come_from_file_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt");
        std::fs::write(&path, format!("{}\n", "k".repeat(40))).unwrap();
        #[cfg(unix)]
        {
            // A key file other users can read is refused (see `private_file`).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let c = load(&[
            ("GATEWAY_AUTH__ALGORITHM", "HS256"),
            ("GATEWAY_AUTH__JWT_SECRET_FILE", path.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(c.auth.jwt_secret.as_ref().unwrap().expose().len(), 40);
        let e = load(&[
            ("GATEWAY_AUTH__ALGORITHM", "HS256"),
            ("GATEWAY_AUTH__JWT_SECRET_FILE", "/nonexistent/jwt"),
        ])
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::FromEnv { var, .. } if var == "GATEWAY_AUTH__JWT_SECRET_FILE"),
            "{e:?}"
        );
    }

    #[test]
    fn a_value_yaml_would_cut_short_is_refused() {
        for value in ["#1", "issuer #1"] {
            let e = load(&[("GATEWAY_AUTH__ISSUER", value)]).unwrap_err();
            assert!(
                matches!(&e, ConfigError::FromEnv { var, .. } if var == "GATEWAY_AUTH__ISSUER"),
                "{value}: {e:?}"
            );
        }
        let c = load(&[("GATEWAY_AUTH__ISSUER", "'issuer #1'")]).unwrap();
        assert_eq!(c.auth.issuer, "issuer #1");
        let c = load(&[("GATEWAY_AUTH__ISSUER", "")]).unwrap();
        assert_eq!(c.auth.issuer, "gateway");
    }

    #[test]
    fn plain_scalars_read_back_as_written() {
        // `0x10` would become 16 if the value were re-written from its parsed form.
        let c = load_in(
            "version: 1\nroutes:\n  - {name: 0x10, path: /, upstream: 'builtin:whoami'}\n",
            &[("GATEWAY_LOG__LEVEL", "warn")],
        )
        .unwrap();
        assert_eq!(c.routes[0].name, "0x10");
        assert_eq!(c.log.level, "warn");
    }
}
