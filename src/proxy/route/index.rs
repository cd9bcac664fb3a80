//! The route index: which routes a request could match, found without trying every route.
//!
//! A table of thousands of routes (one per tenant host, say) must not cost a request thousands
//! of comparisons. The index narrows the table to a handful of candidates whose cost depends on
//! the request's host and path, not on how many routes there are: one trie of path segments per
//! exact host, one per wildcard suffix and one for routes without a host. A request walks the
//! trie of its exact host, of each wildcard suffix of its host (one per dot) and the host-less
//! one.
//!
//! The index only ever over-approximates. Tries are keyed by the loosest comparison any route
//! uses (segments lowercased, trailing dots dropped; `{sub}` as its own branch taking any
//! non-empty segment), so a case-sensitive route sits under the key of its folded segments and
//! the caller checks every candidate with the route's own rules ([`super::Route`]). The index
//! decides which routes are tried, never whether one matches; the order rule (first route in the
//! file wins) is the caller's too. A host pattern the index cannot key (none that validation
//! produces) goes with the host-less routes, so it is still tried.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::config::{HostPattern, RouteSpec};

/// Candidate routes by host, then by path segments.
#[derive(Debug, Default)]
pub(super) struct Index {
    exact: FoldMap<Trie>,
    /// By suffix with its leading dot (`.example.com` for `*.example.com`).
    wildcard: FoldMap<Trie>,
    /// The longest wildcard suffix: a host's dots further from its end cannot start one.
    longest_suffix: usize,
    any_host: Trie,
}

impl Index {
    /// Indexes routes; a candidate is reported by its position in `specs`.
    pub(super) fn new(specs: &[RouteSpec]) -> Self {
        let mut index = Index::default();
        for (position, spec) in specs.iter().enumerate() {
            let trie = match &spec.host {
                Some(HostPattern::Exact(host)) => index.exact.entry(host.as_bytes()),
                Some(HostPattern::Wildcard(suffix))
                    if suffix.starts_with('.') && suffix.len() > 1 =>
                {
                    index.longest_suffix = index.longest_suffix.max(suffix.len());
                    index.wildcard.entry(suffix.as_bytes())
                }
                _ => &mut index.any_host,
            };
            trie.insert(specs, position);
        }
        index
    }

    /// Calls `visit` with each route that may match a request for `host` and `path` (see
    /// [`super::RouteTable::find`]). Within one trie node the positions come in ascending order,
    /// and `visit` returns `true` to skip the rest of that node (it matched, or cannot win).
    /// Across nodes there is no order.
    pub(super) fn candidates<F>(&self, host: Option<&str>, path: &str, visit: &mut F)
    where
        F: FnMut(usize) -> bool,
    {
        // Most specific first, for the same reason as [`Trie::walk`]'s order.
        if let Some(host) = host.map(str::as_bytes) {
            if let Some(trie) = self.exact.get(host) {
                trie.walk(path, visit);
            }
            if self.longest_suffix > 0 {
                // A wildcard suffix starts at a dot that is not the host's first byte
                // (`*.example.com` wants at least one byte before `.example.com`).
                let first = host.len().saturating_sub(self.longest_suffix).max(1);
                for (at, byte) in host.iter().enumerate().skip(first) {
                    if *byte == b'.'
                        && let Some(trie) =
                            host.get(at..).and_then(|suffix| self.wildcard.get(suffix))
                    {
                        trie.walk(path, visit);
                    }
                }
            }
        }
        self.any_host.walk(path, visit);
    }
}

/// Routes by path segments, keyed as a case-insensitive route compares them.
#[derive(Debug, Default)]
struct Trie {
    /// Routes whose prefix ends here, ascending, without those an earlier one here shadows.
    routes: Vec<usize>,
    /// By segment, lowercased and without trailing dots.
    literal: FoldMap<Trie>,
    /// `{sub}`: any non-empty segment.
    owner: Option<Box<Trie>>,
}

impl Trie {
    fn insert(&mut self, specs: &[RouteSpec], position: usize) {
        let Some(spec) = specs.get(position) else {
            return;
        };
        let mut node = self;
        // `/` has no segments; every other prefix is `/seg/...` (see `RouteSpec::path`).
        let path = if spec.path == "/" {
            ""
        } else {
            spec.path.as_str()
        };
        for seg in path.split('/').skip(1) {
            node = if seg == "{sub}" {
                node.owner.get_or_insert_default()
            } else {
                node.literal.entry(without_trailing_dots(seg.as_bytes()))
            };
        }
        // A case-insensitive route here matches every path that reaches here, so a later route
        // here with its host pattern and methods it covers can never be the first match:
        // dropping it keeps a node of repeated prefixes (one per method, say) from being tried
        // route by route. (The host is compared because the host-less trie also holds the
        // patterns the index cannot key.)
        let shadowed = node.routes.iter().any(|&earlier| {
            specs.get(earlier).is_some_and(|e| {
                !e.case_sensitive
                    && e.host == spec.host
                    && e.methods.as_ref().is_none_or(|theirs| {
                        spec.methods
                            .as_ref()
                            .is_some_and(|ours| ours.iter().all(|m| theirs.contains(m)))
                    })
            })
        });
        if !shadowed {
            node.routes.push(position);
        }
    }

    /// Visits the routes of every node `path` reaches: the node of each of its leading segments
    /// (segment by segment as `Route::match_path` splits them), through `{sub}` branches too.
    ///
    /// Deepest nodes first: tables list specific routes before the general ones that would
    /// also match (`/api/admin` before `/api` before `/`), so the first candidate tried is
    /// usually the winner and the shallower ones are skipped by position without being checked.
    /// The recursion is as deep as the matched part of the longest configured prefix.
    fn walk<F>(&self, path: &str, visit: &mut F)
    where
        F: FnMut(usize) -> bool,
    {
        if let Some(after) = path.strip_prefix("/") {
            // A byte scan rather than `str::find('/')`, whose `char` searcher calls `memcmp`
            // on every hit.
            let (seg, next) = after
                .bytes()
                .position(|b| b == b'/')
                .and_then(|end| after.split_at_checked(end))
                .unwrap_or((after, ""));
            if let Some(child) = self.literal.get(without_trailing_dots(seg.as_bytes())) {
                child.walk(next, visit);
            }
            if let Some(owner) = &self.owner
                && !seg.is_empty()
            {
                owner.walk(next, visit);
            }
        }
        for &position in &self.routes {
            if visit(position) {
                break;
            }
        }
    }
}

/// A segment as a case-insensitive route compares it: trailing dots do not count.
fn without_trailing_dots(mut seg: &[u8]) -> &[u8] {
    while let [rest @ .., b'.'] = seg {
        seg = rest;
    }
    seg
}

/// A map keyed by bytes compared ASCII-case-insensitively, looked up without lowercasing the
/// query into a new buffer (matching allocates nothing).
#[derive(Debug)]
struct FoldMap<T> {
    map: HashMap<FoldKey, T, BuildHasherDefault<FoldHasher>>,
}

impl<T> Default for FoldMap<T> {
    fn default() -> Self {
        FoldMap {
            map: HashMap::default(),
        }
    }
}

impl<T: Default> FoldMap<T> {
    fn entry(&mut self, key: &[u8]) -> &mut T {
        self.map
            .entry(FoldKey(key.to_ascii_lowercase().into_boxed_slice()))
            .or_default()
    }
}

impl<T> FoldMap<T> {
    fn get(&self, key: &[u8]) -> Option<&T> {
        self.map.get(&key as &dyn Folded)
    }
}

/// FxHash (rustc's hasher) over the bytes' ASCII lowercase, eight bytes at a time, so a
/// mixed-case segment hashes as its lowercase without being copied. Unseeded on purpose: only
/// configured keys are stored, so a request can choose what it looks up but cannot make keys
/// collide.
#[derive(Debug, Default)]
struct FoldHasher(u64);

impl FoldHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(ascii_lowercase(u64::from_le_bytes(
                word.try_into().unwrap_or_default(),
            )));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            // Shifted into a register: copying into a `[u8; 8]` and reading it back as a word
            // stalls on store forwarding.
            let word = tail
                .iter()
                .rev()
                .fold(0u64, |word, b| (word << 8) | u64::from(*b));
            self.add(ascii_lowercase(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weakest; hashbrown picks buckets with them.
        self.0.rotate_left(26)
    }
}

/// The eight bytes of `word` with ASCII `A`-`Z` lowercased, others unchanged (the word-at-a-time
/// form of `u8::to_ascii_lowercase`).
fn ascii_lowercase(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = word & !HIGH;
    // The high bit of each byte: set where the low seven bits are >= 'A', then > 'Z'. No byte
    // carries into the next (at most 0x7f + 0x3f).
    let from_a = low7 + ONES * (0x80 - u64::from(b'A'));
    let past_z = low7 + ONES * (0x80 - u64::from(b'Z') - 1);
    let upper = from_a & !past_z & !word & HIGH;
    word | (upper >> 2)
}

/// A stored key, lowercase.
#[derive(Debug)]
struct FoldKey(Box<[u8]>);

/// Bytes as the map compares them: what both the stored keys and a borrowed query are, so the
/// map can look up a `&[u8]` of any case (the `Borrow<dyn Trait>` pattern).
trait Folded {
    fn bytes(&self) -> &[u8];
}

impl Folded for FoldKey {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Folded for &[u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl<'a> Borrow<dyn Folded + 'a> for FoldKey {
    fn borrow(&self) -> &(dyn Folded + 'a) {
        self
    }
}

impl Hash for dyn Folded + '_ {
    /// The map's hasher ([`FoldHasher`]) folds the case.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let bytes = self.bytes();
        state.write_usize(bytes.len());
        state.write(bytes);
    }
}

impl PartialEq for dyn Folded + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.bytes().eq_ignore_ascii_case(other.bytes())
    }
}

impl Eq for dyn Folded + '_ {}

// The stored key hashes and compares exactly as its borrowed form, as `Borrow` requires.
impl Hash for FoldKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn Folded).hash(state);
    }
}

impl PartialEq for FoldKey {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn Folded) == (other as &dyn Folded)
    }
}

impl Eq for FoldKey {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_lowercase_word_matches_the_byte_rule() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for (position, byte) in (0..8).flat_map(|p| (0..=255u8).map(move |b| (p, b))) {
            for _ in 0..16 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Every byte in every position, among random neighbours.
                let mut bytes = x.to_le_bytes();
                bytes[position] = byte;
                let want = u64::from_le_bytes(bytes.map(|b| b.to_ascii_lowercase()));
                assert_eq!(
                    ascii_lowercase(u64::from_le_bytes(bytes)),
                    want,
                    "{bytes:?}"
                );
            }
        }
    }

    #[test]
    fn fold_map_ignores_ascii_case_only() {
        let mut m = FoldMap::default();
        *m.entry(b"Admin") = 1;
        *m.entry(b"a-much-longer-segment-than-one-32-byte-chunk-of-the-hasher") = 2;
        assert_eq!(m.get(b"ADMIN"), Some(&1));
        assert_eq!(m.get(b"admin"), Some(&1));
        assert_eq!(m.get(b"admin."), None);
        assert_eq!(m.get(b"admi"), None);
        assert_eq!(m.get("ädmin".as_bytes()), None);
        assert_eq!(m.get(b"Admin\0"), None);
        assert_eq!(
            m.get(b"A-MUCH-LONGER-SEGMENT-THAN-ONE-32-BYTE-CHUNK-OF-THE-HASHER"),
            Some(&2)
        );
        assert_eq!(
            m.get(b"a-much-longer-segment-than-one-32-byte-chunk-of-the-hashe"),
            None
        );
    }
}
