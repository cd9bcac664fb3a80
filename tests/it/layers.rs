//! The layer rules of `lib.rs`, checked on the source text: the `crate::` imports between
//! top-level modules form no cycle, and no source file is longer than [`MAX_LINES`] lines
//! outside its tests.
//!
//! A top-level module is the first name under `src/` (`src/x.rs` or `src/x/`). Every
//! `crate::x` path counts, in `use` lines (groups like `use crate::{a, b::c}` included) and in
//! expressions alike; comments, string literals and test code (`#[cfg(test)]` items, `mod tests`
//! blocks and files declared by `#[cfg(test)] mod name;`) do not. `super::` and `self::` paths
//! stay inside a module and are not followed. `main.rs` and `lib.rs` sit above every module and
//! are not part of the graph.
//!
//! The scanner is a small lexer rather than a Rust parser: it only needs to tell code from
//! comments, strings and character literals, and to match braces.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// The longest a source file may be, not counting its tests.
const MAX_LINES: usize = 800;

/// One import of another top-level module: where it is, and its line as written.
#[derive(Debug, Clone)]
struct Import {
    file: String,
    line: usize,
    source: String,
}

/// A source file read and cleaned: comments and literals blanked, test code removed.
struct Source {
    /// Path under `src/`, with `/` separators.
    rel: String,
    /// Its top-level module.
    top: String,
    /// The file with comments, literals and test code replaced by spaces (newlines kept, so
    /// offsets and line numbers are those of the file).
    code: String,
    /// The file as written, for quoting the lines of imports.
    text: String,
    /// Lines outside test code.
    lines: usize,
    /// Modules this file declares with `#[cfg(test)] mod name;`: test-only files.
    test_mods: Vec<String>,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Replaces comments, string literals and character literals with spaces, keeping newlines.
fn blank_comments_and_literals(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let prev_ident = i > 0 && is_ident(b[i - 1]);
        if b[i..].starts_with(b"//") {
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if !prev_ident && (b[i] == b'r' || b[i..].starts_with(b"br")) && {
            let start = if b[i] == b'r' { i + 1 } else { i + 2 };
            let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
            b.get(start + hashes) == Some(&b'"')
        } {
            // A raw string: r"..." or r#"..."#, also as a byte string.
            let start = if b[i] == b'r' { i + 1 } else { i + 2 };
            let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let body = start + hashes + 1;
            let end = b[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| body + p + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'\'' {
            // A character literal ('x', '\n', '\'', 'é'), or else a lifetime or label.
            let rest = &text[i + 1..];
            let len = if let Some(escaped) = rest.strip_prefix('\\') {
                // Skip the escaped character itself: '\'' is a literal, not a quote pair.
                escaped.chars().next().and_then(|c| {
                    escaped[c.len_utf8()..]
                        .find('\'')
                        .map(|p| 2 + c.len_utf8() + p + 1)
                })
            } else {
                rest.chars()
                    .next()
                    .filter(|c| rest[c.len_utf8()..].starts_with('\''))
                    .map(|c| c.len_utf8() + 2)
            };
            match len {
                Some(len) => {
                    blank(&mut out, i, i + len);
                    i += len;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The offset just past the item starting at or after `from`: past its matching `}` if it has
/// a body, else past its `;`.
fn item_end(code: &[u8], from: usize) -> usize {
    let mut i = from;
    // Further attributes of the same item.
    loop {
        while i < code.len() && code[i].is_ascii_whitespace() {
            i += 1;
        }
        if code[i..].starts_with(b"#[") {
            i = matching(code, i + 1);
        } else {
            break;
        }
    }
    let mut parens = 0i32;
    while i < code.len() {
        match code[i] {
            b'(' | b'[' => parens += 1,
            b')' | b']' => parens -= 1,
            b';' if parens == 0 => return i + 1,
            b'{' if parens == 0 => return matching(code, i),
            _ => {}
        }
        i += 1;
    }
    code.len()
}

/// The offset just past the bracket that closes the one at `open`.
fn matching(code: &[u8], open: usize) -> usize {
    let (o, c) = match code[open] {
        b'{' => (b'{', b'}'),
        b'[' => (b'[', b']'),
        _ => (b'(', b')'),
    };
    let mut depth = 0usize;
    for (i, &b) in code.iter().enumerate().skip(open) {
        if b == o {
            depth += 1;
        } else if b == c {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
    }
    code.len()
}

/// Whether the attribute text (spaces removed) compiles its item only for tests.
fn is_test_cfg(attr: &str) -> bool {
    attr == "#[cfg(test)]" || attr.starts_with("#[cfg(all(test,")
}

/// Reads one file: blanks comments and literals, then test items.
fn clean(rel: &str, text: &str) -> Source {
    let code = blank_comments_and_literals(text);
    let mut bytes = code.into_bytes();
    let mut test_lines = 0;
    let mut test_mods = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_word = i == 0 || !is_ident(bytes[i - 1]);
        let test_item = if bytes[i..].starts_with(b"#[") {
            let end = matching(&bytes, i + 1);
            let attr: String = String::from_utf8_lossy(&bytes[i..end])
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if is_test_cfg(&attr) {
                let item_from = end;
                let item_to = item_end(&bytes, item_from);
                let item = String::from_utf8_lossy(&bytes[item_from..item_to]).into_owned();
                let words: Vec<&str> = item
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .filter(|w| !w.is_empty())
                    .collect();
                if item.trim_end().ends_with(';')
                    && let Some(p) = words.iter().position(|w| *w == "mod")
                    && let Some(name) = words.get(p + 1)
                {
                    test_mods.push((*name).to_owned());
                }
                Some(item_to)
            } else {
                None
            }
        } else if at_word && bytes[i..].starts_with(b"mod tests") {
            let after = &bytes[i + b"mod tests".len()..];
            let gap = after.iter().take_while(|b| b.is_ascii_whitespace()).count();
            (after.get(gap) == Some(&b'{')).then(|| item_end(&bytes, i))
        } else {
            None
        };
        match test_item {
            Some(end) => {
                let newlines = bytes[i..end].iter().filter(|&&b| b == b'\n').count();
                test_lines += newlines + 1;
                for b in &mut bytes[i..end] {
                    if *b != b'\n' {
                        *b = b' ';
                    }
                }
                i = end;
            }
            None => i += 1,
        }
    }
    let top = rel.split('/').next().unwrap_or(rel).trim_end_matches(".rs");
    Source {
        rel: rel.to_owned(),
        top: top.to_owned(),
        code: String::from_utf8_lossy(&bytes).into_owned(),
        text: text.to_owned(),
        lines: text.lines().count().saturating_sub(test_lines),
        test_mods,
    }
}

/// Every `crate::name` in `code`: the name and its byte offset. A group `crate::{a, b::c}`
/// gives each of its first names.
fn crate_paths(code: &str) -> Vec<(String, usize)> {
    let b = code.as_bytes();
    let ident_at = |from: usize| -> (String, usize) {
        let mut i = from;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        (code[start..i].to_owned(), start)
    };
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("crate") {
        let at = from + p;
        from = at + "crate".len();
        if at > 0 && (is_ident(b[at - 1]) || b[at - 1] == b'$') {
            continue;
        }
        let mut i = from;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if !b[i..].starts_with(b"::") {
            continue;
        }
        i += 2;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            // A group: the first name after the brace and after each comma at its own depth.
            let end = matching(b, i);
            let mut depth = 0;
            let mut item_start = true;
            let inner = b.get(i + 1..end.saturating_sub(1)).unwrap_or_default();
            for (j, &c) in inner.iter().enumerate() {
                if item_start && !c.is_ascii_whitespace() {
                    let (name, at) = ident_at(i + 1 + j);
                    if !name.is_empty() {
                        out.push((name, at));
                    }
                    item_start = false;
                }
                match c {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    b',' if depth == 0 => item_start = true,
                    _ => {}
                }
            }
        } else {
            let (name, at) = ident_at(i);
            if !name.is_empty() {
                out.push((name, at));
            }
        }
    }
    out
}

fn line_of(code: &str, offset: usize) -> usize {
    code[..offset].bytes().filter(|&b| b == b'\n').count() + 1
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate's non-test source files, cleaned.
fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let all: Vec<Source> = files
        .iter()
        .map(|path| {
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            clean(&rel, &std::fs::read_to_string(path).unwrap())
        })
        .collect();
    // Files (and directories) declared by `#[cfg(test)] mod name;` are test code.
    let mut test_prefixes = Vec::new();
    for s in &all {
        let dir = match s.rel.rsplit_once('/') {
            Some((dir, "mod.rs")) => format!("{dir}/"),
            Some(_) | None if s.rel == "lib.rs" || s.rel == "main.rs" => String::new(),
            _ => format!("{}/", s.rel.trim_end_matches(".rs")),
        };
        for name in &s.test_mods {
            test_prefixes.push(format!("{dir}{name}.rs"));
            test_prefixes.push(format!("{dir}{name}/"));
        }
    }
    all.into_iter()
        .filter(|s| !test_prefixes.iter().any(|p| s.rel.starts_with(p.as_str())))
        .collect()
}

/// The imports between top-level modules: importer -> imported -> where.
fn graph(sources: &[Source]) -> BTreeMap<String, BTreeMap<String, Vec<Import>>> {
    let roots = ["lib", "main"];
    let modules: BTreeSet<&str> = sources
        .iter()
        .map(|s| s.top.as_str())
        .filter(|t| !roots.contains(t))
        .collect();
    let mut graph: BTreeMap<String, BTreeMap<String, Vec<Import>>> = BTreeMap::new();
    for s in sources.iter().filter(|s| !roots.contains(&s.top.as_str())) {
        let edges = graph.entry(s.top.clone()).or_default();
        for (name, at) in crate_paths(&s.code) {
            if name == s.top || !modules.contains(name.as_str()) {
                continue;
            }
            let line = line_of(&s.code, at);
            edges.entry(name.clone()).or_default().push(Import {
                file: format!("src/{}", s.rel),
                line,
                source: s.text.lines().nth(line - 1).unwrap_or("").trim().to_owned(),
            });
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeMap<String, Vec<Import>>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeMap<String, Vec<Import>>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a str) {
        let n = st.index.len();
        st.index.insert(v, n);
        st.low.insert(v, n);
        st.stack.push(v);
        st.on_stack.insert(v);
        let graph = st.graph;
        for w in graph.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if !st.index.contains_key(w) {
                visit(st, w);
                let low = st.low[v].min(st.low[w]);
                st.low.insert(v, low);
            } else if st.on_stack.contains(w) {
                let low = st.low[v].min(st.index[w]);
                st.low.insert(v, low);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.found.push(comp);
            }
        }
    }
    let mut st = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !st.index.contains_key(v.as_str()) {
            visit(&mut st, v);
        }
    }
    st.found.sort();
    st.found
}

/// A shortest loop from `start` back to it through the modules of `comp`.
fn a_loop(
    graph: &BTreeMap<String, BTreeMap<String, Vec<Import>>>,
    comp: &[String],
    start: &str,
) -> Vec<String> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flat_map(|e| e.keys()) {
            if !comp.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![v.to_owned()];
                let mut at = v;
                while at != start {
                    at = came_from[at];
                    path.push(at.to_owned());
                }
                path.reverse();
                path.push(start.to_owned());
                return path;
            }
            if !came_from.contains_key(w.as_str()) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start.to_owned()]
}

fn describe_edge(out: &mut String, from: &str, to: &str, imports: &[Import]) {
    out.push_str(&format!("  {from} -> {to}:\n"));
    for i in imports {
        out.push_str(&format!("    {}:{}  {}\n", i.file, i.line, i.source));
    }
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = graph(&sources());
    let mut report = String::new();
    for comp in cycles(&graph) {
        report.push_str(&format!("module cycle: {}\n", comp.join(" <-> ")));
        let path = a_loop(&graph, &comp, &comp[0]);
        report.push_str(&format!("one loop through it: {}\n", path.join(" -> ")));
        for pair in path.windows(2) {
            describe_edge(&mut report, &pair[0], &pair[1], &graph[&pair[0]][&pair[1]]);
        }
        report.push_str("every import between these modules:\n");
        for from in &comp {
            for (to, imports) in &graph[from] {
                if comp.contains(to) {
                    describe_edge(&mut report, from, to, imports);
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "imports between top-level modules must point one way (see lib.rs); \
         move the shared item down to the lower module.\n{report}"
    );
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|s| s.lines > MAX_LINES)
        .map(|s| format!("  src/{}: {} lines outside tests", s.rel, s.lines))
        .collect();
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines (split them by responsibility):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_scanner_reads_paths_and_skips_comments_literals_and_tests() {
    let text = r##"//! crate::doc_comment
use crate::{alpha, beta::{x, y}, gamma::z as w};
use crate :: delta;
// crate::line_comment
/* crate::block /* nested crate::inner */ still crate::comment */
fn f<'a>(s: &'a str) -> char {
    let _ = "crate::string \" crate::escaped";
    let _ = r#"crate::raw "# ;
    let _ = b"crate::bytes";
    let _ = crate::epsilon::call(s);
    let _ = $crate::macro_path;
    let _ = my_crate::not_this;
    let _ = '\'';
    '"'
}
#[cfg(test)]
use crate::test_import;
#[cfg(all(test, unix))]
fn unix_test() { crate::test_fn(); }
#[cfg(test)]
mod helpers;
mod tests {
    use crate::in_mod_tests;
}
fn g() { crate::zeta(); }
"##;
    let s = clean("m.rs", text);
    let names: Vec<(String, usize)> = crate_paths(&s.code)
        .into_iter()
        .map(|(n, at)| (n, line_of(&s.code, at)))
        .collect();
    let expected = [
        ("alpha", 2),
        ("beta", 2),
        ("gamma", 2),
        ("delta", 3),
        ("epsilon", 10),
        ("zeta", 25),
    ];
    let expected: Vec<(String, usize)> = expected
        .iter()
        .map(|(n, l)| ((*n).to_owned(), *l))
        .collect();
    assert_eq!(names, expected, "cleaned code:\n{}", s.code);
    assert_eq!(s.test_mods, ["helpers"]);
    assert_eq!(s.lines, text.lines().count() - 9);
}
