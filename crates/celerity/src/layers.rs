//! A test that the modules of this crate form layers: no top-level module names one that names it
//! back, directly or through others.
//!
//! It reads the crate's source (not its compiled form), takes every `crate::` path outside tests
//! and comments, resolves the crate root's re-exports (`crate::Client` is `client`'s) and fails
//! with the cycle it finds. `docs/ARCHITECTURE.md` draws the layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the source directory is readable") {
        let path = entry.expect("the source directory is readable").path();
        if path.is_dir() {
            sources(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The code of a file without its inline test module (`#[cfg(test)] mod tests { .. }`, last in
/// the file) and its comment lines.
fn code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|pair| {
            pair[0].trim() == "#[cfg(test)]"
                && pair[1].starts_with("mod ")
                && pair[1].trim_end().ends_with('{')
        })
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .filter(|line| !line.trim_start().starts_with("//"))
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers at the start of each path inside a `use` group, `{a::b, c}` giving `a` and `c`.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_start = true;
    let mut current = String::new();
    for character in group.chars() {
        if depth == 0 && at_start {
            if character.is_alphanumeric() || character == '_' {
                current.push(character);
                continue;
            }
            if !current.is_empty() {
                heads.push(std::mem::take(&mut current));
                at_start = false;
            }
        }
        match character {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => at_start = true,
            _ => {}
        }
    }
    if !current.is_empty() {
        heads.push(current);
    }
    heads
}

/// The first segments of every `crate::` path in `code`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut heads = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with('$') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            heads.extend(group_heads(&group[..end]));
        } else {
            let head: String = rest
                .chars()
                .take_while(|character| character.is_alphanumeric() || *character == '_')
                .collect();
            heads.push(head);
        }
    }
    heads
}

/// The index of the `}` closing a group whose `{` came just before `text`.
fn matching_brace(text: &str) -> usize {
    let mut depth = 1;
    for (index, character) in text.char_indices() {
        match character {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return index;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The crate root's re-exports: item name to the module it comes from.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut items = BTreeMap::new();
    for statement in lib.split(';') {
        let statement = statement.trim();
        let Some(path) = statement
            .strip_prefix("pub use ")
            .or_else(|| statement.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let Some((module, rest)) = path.split_once("::") else {
            continue;
        };
        let names = rest.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.trim().rsplit("::").next().unwrap_or_default();
            if !name.is_empty() {
                items.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    items
}

/// The top-level module of a file: `client` for `client.rs` and `client/options.rs`.
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.trim_end_matches(".rs");
    (module != "lib").then(|| module.to_owned())
}

/// The edges between top-level modules.
fn module_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let lib = std::fs::read_to_string(root.join("lib.rs")).expect("lib.rs is readable");
    let reexports = reexports(&code(&lib));
    let mut files = Vec::new();
    sources(root, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|file| module_of(root, file))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(root, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a source file is readable");
        let edges = graph.entry(module.clone()).or_default();
        for head in crate_paths(&code(&text)) {
            let target = reexports.get(&head).cloned().unwrap_or(head);
            if target != module && modules.contains(&target) {
                edges.insert(target);
            }
        }
    }
    graph
}

/// A cycle of the graph, if it has one, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_names_a_module_that_names_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&root);
    assert!(graph.contains_key("client") && graph["client"].contains("dispatch"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "the modules of celerity form a cycle: {}; move what the lower module needs further down",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_test_module_is_left_out_and_a_gated_module_line_is_kept() {
    let text = "#[cfg(test)]\nmod layers;\nuse crate::a;\n// crate::b\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}";
    assert_eq!(crate_paths(&code(text)), ["a"]);
}

#[test]
fn paths_are_read_from_groups_and_reexports() {
    let code = "use crate::{a::B, c, d::{e, f}};\nlet x = crate::Client::new();";
    assert_eq!(crate_paths(code), ["a", "c", "d", "Client"]);
    let lib = "pub use client::{ApplyOptions, Client};\npub(crate) use error::error_chain;";
    let reexports = reexports(lib);
    assert_eq!(reexports["Client"], "client");
    assert_eq!(reexports["error_chain"], "error");
}

#[test]
fn a_cycle_is_found_and_named() {
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(
        find_cycle(&graph).unwrap(),
        ["a", "b", "c", "a"].map(String::from)
    );
    let layered = BTreeMap::from([("a".to_owned(), BTreeSet::from(["b".to_owned()]))]);
    assert_eq!(find_cycle(&layered), None);
}
