//! The shape of the source tree, checked: the import graph between modules has no cycle and
//! no arrow that runs up the rooms' layers (docs/architecture.md draws them), and the
//! operator's and the issuer's production code has no file over 500 lines and no function
//! over 80, and the issuer reads the clock only where `CLOCK_READERS` says. Pure and fast: it
//! reads `src/` as text, with no dependency and no build.
//!
//! Nodes of the graph: a top-level room (`src/config/**` is `config`), except inside
//! `src/operator` and `src/issuer`, where every file is a module of its own. An import is
//! judged between the two modules that are siblings under their common parent (a file of
//! `issuer/browser/` importing one of `issuer/grants/` is the arrow `browser → grants`); a
//! module using its parent (`super::`) or its own children is the module tree, not an arrow.
//! Test code (`tests.rs`, what lies in a `tests/` folder, `#[cfg(test)]` items) is not
//! production and is left out. The crate's one test convention is checked too: a module's unit
//! tests are its child `mod tests` (inline, or `tests.rs` beside it when long), nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rooms of `src/`, bottom layer first: a room may import only rooms of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["telemetry", "shutdown", "store", "expression"],
    &["api", "outbound"],
    &["listener", "config"],
    &["policy", "keys"],
    &["issuer"],
    &["operator", "standalone"],
    &["plugin"],
    &["fuzz"],
];

/// Rooms whose files are modules of their own in the graph.
const SPLIT_ROOMS: &[&str] = &["operator", "issuer"];

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

/// The production files of `src/issuer` that may read the clock, and why. Everything else is
/// handed the time of its request (`Incoming::now`, `Incoming::at`) or of its caller, so one
/// request sees one time.
const CLOCK_READERS: &[(&str, &str)] =
    &[("issuer/mod.rs", "the dispatcher: reads the clock once per request (Incoming) and per /readyz probe")];

/// The paths whose `::now` reads a clock (jiff's and std's); `unix_now` read it too.
const CLOCKS: &[&str] = &["Timestamp", "Zoned", "SystemTime", "Instant"];

/// One source file: its module path (`["issuer", "browser", "authorize"]`) and its code with
/// comments, strings and test items blanked out (line numbers kept).
struct Source {
    path: PathBuf,
    module: Vec<String>,
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Whether a file holds only tests (by the crate's convention: `tests.rs` and what lies in a
/// `tests/` folder).
fn is_test_file(rel: &Path) -> bool {
    rel.components().any(|c| {
        let c = c.as_os_str().to_string_lossy();
        c.strip_suffix(".rs").unwrap_or(&c) == "tests"
    })
}

/// The module path of a file below `src/`; `None` for the crate roots.
fn module_of(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" | "main.rs" if parts.is_empty() => None,
        "mod.rs" => Some(parts),
        _ => {
            parts.push(last.trim_end_matches(".rs").to_owned());
            Some(parts)
        }
    }
}

fn production_sources() -> Vec<Source> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).unwrap().to_owned();
            if is_test_file(&rel) {
                return None;
            }
            let module = module_of(&rel)?;
            let text = std::fs::read_to_string(&path).unwrap();
            Some(Source { path: rel, module, code: strip_test_items(&blank_comments_and_strings(&text)) })
        })
        .collect()
}

/// `text` with comments and the contents of string and char literals replaced by spaces,
/// newlines kept, so that line numbers and brace depth stay true.
fn blank_comments_and_strings(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"') | Some('#')) && !ident_char(b.get(i.wrapping_sub(1)).copied()) {
            // A raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push('"');
            j += 1;
            out.extend(std::iter::repeat_n(' ', j - i - 1));
            i = j;
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == '"' && (0..hashes).all(|h| b.get(i + 1 + h) == Some(&'#')) {
                    out.push('"');
                    out.extend(std::iter::repeat_n(' ', hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}'), or a lifetime ('a), left as it is.
            let close = if next == Some('\\') {
                (i + 2..b.len().min(i + 12)).find(|&j| b[j] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    out.push('\'');
                    out.extend(std::iter::repeat_n(' ', end - i - 1));
                    out.push('\'');
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// `code` (already without comments and strings) with every `#[cfg(test)]` item blanked.
fn strip_test_items(code: &str) -> String {
    let mut b: Vec<char> = code.chars().collect();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= b.len() {
        if b[i..i + marker.len()] != marker[..] {
            i += 1;
            continue;
        }
        // The item ends at its first `;` outside braces, or at the brace closing its body.
        let mut j = i + marker.len();
        let mut depth = 0i64;
        while j < b.len() {
            match b[j] {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ';' if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        let end = (j + 1).min(b.len());
        for c in &mut b[i..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = j;
    }
    b.into_iter().collect()
}

/// Every path the code names from `crate`, `super` or `self`, resolved to an absolute module
/// path (a `use` tree gives one path per leaf), with the line it starts on.
fn crate_paths(module: &[String], code: &str) -> Vec<(usize, Vec<String>)> {
    let (tokens, lines) = tokenize(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        let starts = matches!(t, "crate" | "super" | "self" | "$crate")
            && tokens.get(i + 1).is_some_and(|n| n == "::")
            && !(i > 0 && tokens[i - 1] == "::");
        if !starts {
            i += 1;
            continue;
        }
        // `super` and `self` are relative to the file's module: `a/b.rs` is `a::b`, and its
        // `super` is `a`; `a/mod.rs` is `a`, and its `super` is the crate.
        let here: Vec<String> = module.to_vec();
        let mut base: Vec<String> = Vec::new();
        let mut j = i;
        loop {
            match tokens[j].as_str() {
                "crate" | "$crate" => base.clear(),
                "self" => {
                    if j == i {
                        base = here.clone();
                    }
                }
                "super" => {
                    if j == i {
                        base = here.clone();
                    }
                    base.pop();
                }
                _ => break,
            }
            if tokens.get(j + 1).is_some_and(|n| n == "::")
                && tokens.get(j + 2).is_some_and(|n| matches!(n.as_str(), "super" | "self"))
            {
                j += 2;
            } else {
                break;
            }
        }
        // tokens[j] is the last of crate/self/super; a path tree follows its `::`.
        let mut k = j + 2;
        let mut paths = Vec::new();
        parse_tree(&tokens, &mut k, base, &mut paths);
        out.extend(paths.into_iter().map(|p| (lines[i], p)));
        i = k.max(i + 1);
    }
    out
}

/// Parses a path tree at `tokens[*k]` (`a::b`, `a::{b, c::d}`, `*`) under `prefix`.
fn parse_tree(tokens: &[String], k: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        let Some(t) = tokens.get(*k) else {
            out.push(path);
            return;
        };
        if t == "{" {
            *k += 1;
            loop {
                match tokens.get(*k).map(String::as_str) {
                    None => return,
                    Some("}") => {
                        *k += 1;
                        return;
                    }
                    Some(",") => *k += 1,
                    Some("self") => {
                        out.push(path.clone());
                        *k += 1;
                    }
                    Some(_) => {
                        parse_tree(tokens, k, path.clone(), out);
                        // `as name` renames the leaf just read.
                        if tokens.get(*k).is_some_and(|t| t == "as") {
                            *k += 2;
                        }
                    }
                }
            }
        } else if t == "*" {
            *k += 1;
            out.push(path);
            return;
        } else if is_ident(t) {
            path.push(t.clone());
            *k += 1;
            if tokens.get(*k).is_some_and(|n| n == "::") {
                *k += 1;
                continue;
            }
            // `as name` and the rest of the expression are not part of the path.
            out.push(path);
            return;
        } else {
            out.push(path);
            return;
        }
    }
}

fn is_ident(t: &str) -> bool {
    t.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && t.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Identifiers (with `$crate`), `::` and single punctuation characters, each with its line
/// (from 1).
fn tokenize(code: &str) -> (Vec<String>, Vec<usize>) {
    let b: Vec<char> = code.chars().collect();
    let (mut out, mut lines) = (Vec::new(), Vec::new());
    let mut line = 1;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            line += usize::from(c == '\n');
            i += 1;
            continue;
        }
        lines.push(line);
        if c.is_alphanumeric() || c == '_' || (c == '$' && b.get(i + 1).is_some_and(|n| n.is_alphabetic())) {
            let start = i;
            i += 1;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    (out, lines)
}

/// The graph node of a module: its room, or inside a split room the module itself.
fn node_of(module: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    // The longest prefix that is a module of its own file (the rest names an item).
    let mut m = module.to_vec();
    while !m.is_empty() && !modules.contains(&m) {
        m.pop();
    }
    if m.is_empty() {
        return m;
    }
    if SPLIT_ROOMS.contains(&m[0].as_str()) { m } else { vec![m[0].clone()] }
}

/// Arrows between sibling modules: (parent, from, to) with where each was seen.
type Arrows = BTreeMap<(Vec<String>, String, String), Vec<String>>;

fn arrows(sources: &[Source]) -> Arrows {
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let mut out = Arrows::new();
    for s in sources {
        let from = node_of(&s.module, &modules);
        for (line, path) in crate_paths(&s.module, &s.code) {
            let to = node_of(&path, &modules);
            if to.is_empty() || to == from {
                continue;
            }
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            // A module and its own ancestor: the module tree, not an arrow between rooms.
            if common == from.len() || common == to.len() {
                continue;
            }
            let key = (from[..common].to_vec(), from[common].clone(), to[common].clone());
            out.entry(key).or_default().push(format!("src/{}:{line}: {}", s.path.display(), path.join("::")));
        }
    }
    out
}

/// The cycles of a directed graph, one per strongly connected component of more than one
/// node, each printed as a closed walk.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.iter().flat_map(|(a, bs)| std::iter::once(a).chain(bs)).collect();
    let reaches = |from: &String, to: &String| -> Option<Vec<String>> {
        // Shortest path by breadth-first search.
        let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            for m in edges.get(n).into_iter().flatten() {
                if m == to {
                    let mut path = vec![m.clone(), n.clone()];
                    let mut cur = n;
                    while cur != from {
                        cur = prev[cur];
                        path.push(cur.clone());
                    }
                    path.reverse();
                    return Some(path);
                }
                if !prev.contains_key(m) && m != from {
                    prev.insert(m, n);
                    queue.push_back(m);
                }
            }
        }
        None
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for n in nodes {
        if seen.contains(n) {
            continue;
        }
        if let Some(cycle) = reaches(n, n) {
            seen.extend(cycle.iter().cloned());
            out.push(cycle);
        }
    }
    out
}

fn layer_of(room: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&room))
}

#[test]
fn every_room_is_in_a_layer() {
    let sources = production_sources();
    let rooms: BTreeSet<&str> = sources.iter().map(|s| s.module[0].as_str()).collect();
    let missing: Vec<_> = rooms.iter().filter(|r| layer_of(r).is_none()).collect();
    assert!(missing.is_empty(), "rooms of src/ missing from LAYERS in tests/architecture.rs: {missing:?}");
}

#[test]
fn the_import_graph_has_no_cycle_and_no_arrow_up() {
    let arrows = arrows(&production_sources());
    let mut report = Vec::new();

    for ((parent, from, to), seen) in &arrows {
        if parent.is_empty() && layer_of(from) <= layer_of(to) {
            report.push(format!(
                "{from} → {to} runs up or across the layers (LAYERS); seen at:\n    {}",
                seen.join("\n    ")
            ));
        }
    }

    let mut by_parent: BTreeMap<&Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (parent, from, to) in arrows.keys() {
        by_parent.entry(parent).or_default().entry(from.clone()).or_default().insert(to.clone());
    }
    for (parent, edges) in &by_parent {
        for cycle in cycles(edges) {
            let mut lines = vec![format!("cycle in {}: {}", display(parent), cycle.join(" → "))];
            for pair in cycle.windows(2) {
                let seen = &arrows[&((*parent).clone(), pair[0].clone(), pair[1].clone())];
                lines.push(format!("  {} → {}:\n    {}", pair[0], pair[1], seen.join("\n    ")));
            }
            report.push(lines.join("\n"));
        }
    }
    assert!(report.is_empty(), "\n{}\n", report.join("\n\n"));
}

fn display(parent: &[String]) -> String {
    if parent.is_empty() { "src/".into() } else { format!("src/{}/", parent.join("/")) }
}

/// The functions of `code` as (name, first line, number of lines), found by `fn name` and the
/// braces of its body.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let b: Vec<char> = code.chars().collect();
    // The line (from 1) of every char.
    let line_of: Vec<usize> = b
        .iter()
        .scan(1, |line, c| {
            let here = *line;
            *line += usize::from(*c == '\n');
            Some(here)
        })
        .collect();
    let tokens_at: Vec<(usize, String)> = {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_alphanumeric() || b[i] == '_' {
                let start = i;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                out.push((start, b[start..i].iter().collect()));
            } else {
                i += 1;
            }
        }
        out
    };
    let mut out = Vec::new();
    for w in tokens_at.windows(2) {
        if w[0].1 != "fn" || !is_ident(&w[1].1) {
            continue;
        }
        // The body is the first `{` before any `;` (a declaration without body has none).
        let mut j = w[1].0;
        let mut parens = 0i32;
        while j < b.len() && !(parens == 0 && (b[j] == '{' || b[j] == ';')) {
            match b[j] {
                '(' | '<' | '[' => parens += 1,
                ')' | ']' => parens -= 1,
                '>' if b.get(j.wrapping_sub(1)) != Some(&'-') => parens -= 1,
                _ => {}
            }
            j += 1;
        }
        if j >= b.len() || b[j] == ';' {
            continue;
        }
        let mut depth = 0;
        while j < b.len() {
            match b[j] {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        let (start_line, end_line) = (line_of[w[0].0], line_of[j.min(b.len() - 1)]);
        out.push((w[1].1.clone(), start_line, end_line - start_line + 1));
    }
    out
}

#[test]
fn operator_and_issuer_files_and_functions_stay_small() {
    let mut report = Vec::new();
    for s in production_sources() {
        if !SPLIT_ROOMS.contains(&s.module[0].as_str()) {
            continue;
        }
        // Production lines: the file without its test items (blanked, so trailing blank lines).
        let lines = s.code.trim_end().lines().count();
        if lines > MAX_FILE_LINES {
            report.push(format!("src/{}: {lines} lines (at most {MAX_FILE_LINES})", s.path.display()));
        }
        for (name, line, len) in functions(&s.code) {
            if len > MAX_FN_LINES {
                report.push(format!(
                    "src/{}:{line}: fn {name} has {len} lines (at most {MAX_FN_LINES})",
                    s.path.display()
                ));
            }
        }
    }
    assert!(report.is_empty(), "\n{}\n", report.join("\n"));
}

/// The lines of `code` (already without comments, strings and tests) that read a clock:
/// `Timestamp::now`, `Instant::now` and the like, called or not, and any `unix_now`.
fn clock_reads(code: &str) -> Vec<usize> {
    let (tokens, lines) = tokenize(code);
    let mut out: Vec<usize> = (0..tokens.len())
        .filter(|&i| {
            tokens[i] == "unix_now"
                || (CLOCKS.contains(&tokens[i].as_str())
                    && tokens.get(i + 1).is_some_and(|t| t == "::")
                    && tokens.get(i + 2).is_some_and(|t| t == "now"))
        })
        .map(|i| lines[i])
        .collect();
    out.dedup();
    out
}

/// The issuer reads the clock once per request, at dispatch, and passes it down: a handler
/// that read its own would see another time than the rest of its request.
#[test]
fn the_issuer_reads_the_clock_only_where_clock_readers_says() {
    let mut report = Vec::new();
    let mut readers = BTreeSet::new();
    for s in production_sources() {
        if s.module[0] != "issuer" {
            continue;
        }
        let lines = clock_reads(&s.code);
        let path = s.path.to_string_lossy().replace('\\', "/");
        if lines.is_empty() {
            continue;
        }
        readers.insert(path.clone());
        if CLOCK_READERS.iter().any(|(allowed, _)| *allowed == path) {
            continue;
        }
        for line in lines {
            report.push(format!(
                "src/{path}:{line}: reads the clock; take the request's time (Incoming::now, Incoming::at) or the caller's"
            ));
        }
    }
    for (allowed, _) in CLOCK_READERS {
        if !readers.contains(*allowed) {
            report.push(format!("src/{allowed} no longer reads the clock: take it out of CLOCK_READERS"));
        }
    }
    assert!(report.is_empty(), "\n{}\n", report.join("\n"));
}

/// One test convention: every `#[cfg(test)] mod` of production code is `mod tests`, and no
/// test file is named otherwise (`people_tests.rs`, `x_tests/`).
#[test]
fn unit_tests_are_the_child_mod_tests_of_their_module() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut offenders = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).unwrap().to_owned();
        let named_otherwise = rel.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            let stem = c.strip_suffix(".rs").unwrap_or(&c);
            stem != "tests" && (stem.ends_with("_tests") || stem.ends_with("_test"))
        });
        if named_otherwise {
            offenders.push(format!("src/{}: test files are `tests.rs` or lie in a `tests/` folder", rel.display()));
        }
        if is_test_file(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (i, pair) in lines.windows(2).enumerate() {
            let module = pair[1].strip_prefix("pub(crate) ").unwrap_or(pair[1]);
            if pair[0] == "#[cfg(test)]" && module.starts_with("mod ") {
                let name = module["mod ".len()..].trim_end_matches([';', '{', ' ']);
                if name != "tests" {
                    offenders.push(format!("src/{}:{}: test module `{name}` (call it `tests`)", rel.display(), i + 2));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

#[test]
fn the_checker_reads_use_trees_relative_paths_and_skips_tests() {
    let module: Vec<String> = ["issuer", "browser", "authorize"].map(String::from).to_vec();
    let code = blank_comments_and_strings(
        "use crate::{api::{A, B}, config::subjects::x as y};\nuse super::super::grants::{self, Person};\n\
         let s = \"crate::store::X\"; // crate::policy::Y\nfn f() { self::inner::g(); }\n\
         #[cfg(test)]\nmod tests { use crate::standalone::Z; }\n",
    );
    let code = strip_test_items(&code);
    let paths: Vec<String> = crate_paths(&module, &code).iter().map(|(_, p)| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "api::A",
            "api::B",
            "config::subjects::x",
            "issuer::grants",
            "issuer::grants::Person",
            "issuer::browser::authorize::inner::g"
        ]
    );
    let fns = functions("fn short() {\n}\nfn long() -> Vec<u8> {\n\n\n}\n");
    assert_eq!(fns, [("short".into(), 1, 2), ("long".into(), 3, 4)]);
    let clocked = strip_test_items(&blank_comments_and_strings(
        "let a = std::time::Instant::now();\nlet b = jiff::Timestamp::now().as_second(); // Instant::now()\n\
         let c = req.now;\nlet d = \"SystemTime::now()\";\nlet e = unix_now();\nlet f = Instant::now;\n\
         #[cfg(test)]\nmod tests { fn t() { let _ = Instant::now(); } }\n",
    ));
    assert_eq!(clock_reads(&clocked), [1, 2, 5, 6]);
}
