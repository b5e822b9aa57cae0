//! The module graph of ledger-api's library is one-way (ARCHITECTURE.md): no import
//! circle between its files, and the HTTP middleware (`http/`) imports nothing from the
//! handler modules (`routes/`).
//!
//! The graph is read from the sources: every `use crate::…` (and `use super::…` at a
//! file's top level), braces expanded, and every `crate::…` path written inline, each
//! resolved to the file of the longest module prefix it names. A `mod` declaration is
//! not an import. `main.rs` and `bin/` are other crates (they use `ledger_api::…`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file's module path: `lib.rs` is `[]`, `a/b.rs` and `a/b/mod.rs` are `[a, b]`.
type ModulePath = Vec<String>;

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("entry").path())
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

fn module_path(relative: &Path) -> ModulePath {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// Splits `a, b::{c, d}` at the commas outside braces.
fn split_top(list: &str) -> Vec<String> {
    let (mut out, mut depth, mut current) = (Vec::new(), 0usize, String::new());
    for c in list.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == ',' && depth == 0 {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `crate::a::{b, c::d}` as `[crate::a::b, crate::a::c::d]`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.replace(" as ", "@").split_whitespace().collect();
    match tree.find("::{") {
        Some(at) if tree.ends_with('}') => {
            let prefix = &tree[..at];
            split_top(&tree[at + 3..tree.len() - 1])
                .iter()
                .flat_map(|part| {
                    if part == "self" {
                        vec![prefix.to_owned()]
                    } else {
                        expand(&format!("{prefix}::{part}"))
                    }
                })
                .collect()
        }
        _ => vec![tree.split('@').next().unwrap_or("").to_owned()],
    }
}

fn idents(path: &str) -> Vec<String> {
    path.split("::")
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The module paths a file's code names: `use` trees, inline `crate::` paths, and paths
/// through the child modules it declares (`mod payouts;` … `payouts::router()`).
fn imports(module: &ModulePath, source: &str) -> Vec<ModulePath> {
    let code: Vec<&str> = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect();
    let children: Vec<String> = code
        .iter()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect();
    let mut found = Vec::new();
    for line in &code {
        for child in &children {
            let needle = format!("{child}::");
            let mut rest = *line;
            while let Some(at) = rest.find(&needle) {
                let before = rest[..at].chars().last();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    let named: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let mut path = module.clone();
                    path.extend(idents(&named));
                    found.push(path);
                }
                rest = &rest[at + needle.len()..];
            }
        }
    }
    let mut index = 0;
    while index < code.len() {
        let line = code[index];
        let trimmed = line.trim_start();
        let top_level = trimmed.len() == line.len();
        let statement = trimmed
            .strip_prefix("pub(crate) use ")
            .or_else(|| trimmed.strip_prefix("pub use "))
            .or_else(|| trimmed.strip_prefix("use "));
        if let Some(first) = statement {
            let mut text = first.to_owned();
            while !text.trim_end().ends_with(';') && index + 1 < code.len() {
                index += 1;
                text.push_str(code[index]);
            }
            for path in expand(text.trim_end().trim_end_matches(';')) {
                let parts = idents(&path);
                match parts.first().map(String::as_str) {
                    Some("crate") => found.push(parts[1..].to_vec()),
                    // At a file's top level `super` is the parent module; inside an inline
                    // module (`mod tests`) it is the file itself.
                    Some("super") if top_level && !module.is_empty() => {
                        let mut parent = module[..module.len() - 1].to_vec();
                        parent.extend_from_slice(&parts[1..]);
                        found.push(parent);
                    }
                    _ => {}
                }
            }
        } else {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                let before = rest[..at].chars().last();
                rest = &rest[at..];
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    found.push(idents(&path)[1..].to_vec());
                }
                rest = &rest[path.len().max(1)..];
            }
        }
        index += 1;
    }
    found
}

/// The library's files and, for each, the files it imports (itself left out).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = source_dir();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let modules: BTreeMap<ModulePath, String> = files
        .iter()
        .filter_map(|file| {
            let relative = file.strip_prefix(&root).expect("under src");
            let name = relative.to_string_lossy().replace('\\', "/");
            (name != "main.rs" && !name.starts_with("bin/")).then(|| (module_path(relative), name))
        })
        .collect();
    let mut graph = BTreeMap::new();
    for (module, name) in &modules {
        let source = std::fs::read_to_string(root.join(name)).expect("read a source file");
        let mut targets = BTreeSet::new();
        for mut path in imports(module, &source) {
            while !path.is_empty() && !modules.contains_key(&path) {
                path.pop();
            }
            if let Some(target) = modules.get(&path) {
                if target != name {
                    targets.insert(target.clone());
                }
            }
        }
        graph.insert(name.clone(), targets);
    }
    graph
}

/// A circle of the graph, if there is one.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut circle = stack[from..].to_vec();
                circle.push(node.to_owned());
                return Some(circle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, marks, stack) {
                return Some(circle);
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn the_module_graph_has_no_circle() {
    let graph = graph();
    // The reader sees the imports it must (else the check would pass on nothing).
    let payouts = &graph["routes/payouts.rs"];
    for expected in [
        "http/extract.rs",
        "routes/context.rs",
        "state.rs",
        "writer.rs",
    ] {
        assert!(
            payouts.contains(expected),
            "routes/payouts.rs -> {expected}: {payouts:?}"
        );
    }
    assert!(
        graph["lib.rs"].contains("http/middleware.rs"),
        "{:?}",
        graph["lib.rs"]
    );
    assert!(graph["webhooks/delivery.rs"].contains("webhooks/settings.rs"));
    if let Some(circle) = find_circle(&graph) {
        panic!("import circle: {}", circle.join(" -> "));
    }
}

#[test]
fn the_middleware_imports_no_handler_module() {
    let graph = graph();
    let middleware: Vec<_> = graph.keys().filter(|f| f.starts_with("http/")).collect();
    assert!(middleware.len() >= 4, "{middleware:?}");
    for file in middleware {
        let handlers: Vec<_> = graph[file]
            .iter()
            .filter(|t| t.starts_with("routes/") || t.as_str() == "routes.rs")
            .collect();
        assert!(handlers.is_empty(), "{file} imports {handlers:?}");
    }
}

#[test]
fn the_reader_and_the_check_find_a_planted_circle() {
    let module = vec!["routes".to_owned(), "payouts".to_owned()];
    let source = "mod rows;\nuse crate::http::{\n    extract::Body,\n    context::Caller as C,\n};\nuse super::context::Ctx;\nfn f() { crate::state::AppState::build(); rows::g(); }\nmod tests {\n    use super::*;\n}\n";
    let found = imports(&module, source);
    let names: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        names,
        [
            "routes::payouts::rows::g",
            "http::extract::Body",
            "http::context::Caller",
            "routes::context::Ctx",
            "state::AppState::build"
        ]
    );
    let planted: BTreeMap<String, BTreeSet<String>> = [
        ("a.rs", &["b.rs"][..]),
        ("b.rs", &["c.rs"][..]),
        ("c.rs", &["a.rs"][..]),
        ("d.rs", &[][..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
    .collect();
    assert_eq!(
        find_circle(&planted),
        Some(vec![
            "a.rs".into(),
            "b.rs".into(),
            "c.rs".into(),
            "a.rs".into()
        ])
    );
    let mut cut = planted;
    cut.get_mut("c.rs").map(BTreeSet::clear);
    assert_eq!(find_circle(&cut), None);
}

/// A route exists only with its operation: the resources register their handlers with
/// `utoipa_axum::routes!` (which adds each one's `#[utoipa::path]` to /openapi.json);
/// a plain `.route(…)` would serve a path the document does not list. The black-box
/// drift test (`http.rs`, `openapi_matches_the_routes`) probes every documented one.
#[test]
fn every_route_is_registered_with_its_operation() {
    let mut files = Vec::new();
    rust_files(&source_dir(), &mut files);
    let mut registered = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for bare in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            assert!(
                !text.contains(bare),
                "{} registers a route with {bare}…), outside /openapi.json",
                file.display()
            );
        }
        registered += text.matches(".routes(routes!(").count();
    }
    // The scan reads the handler modules (else it would pass on nothing).
    assert!(registered >= 25, "{registered} registrations found");
}
