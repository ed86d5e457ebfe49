//! The layering of the workspace's library crates: no module names a module that names it back.
//!
//! Each source file is parsed with `syn`; every `use` and every path that starts with `crate`,
//! `super`, `self`, a child module or a name a `use` brought in is resolved to the module that
//! defines the item (following `pub use` re-exports), and the graph of those edges must have no
//! cycle. `pub use` lines are façades, not dependencies, and `#[cfg(test)]` items are skipped:
//! test code may reach anywhere. A parent naming a child and the child naming an item of its
//! parent is a cycle too: items a child needs live in a module below both. A few modules, named
//! with their reason in `CELERITY_UNITS`, count with the files below them as one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module's path from the crate root: `["worker", "queue"]`.
type ModPath = Vec<String>;

/// Modules whose files are the parts of one type, counted as one module: each part names the
/// type and the type's file names the parts.
///
/// `worker::queue`: `QueueActor`'s handlers and steps, one concern per file under `queue/`
/// (fetches, the idle wait, tasks in flight, pull requests, each new-task signal), are
/// `impl QueueActor` blocks; its rules are plain data in `queue/levels.rs` and
/// `queue/held_credit.rs`, which name no actor.
const CELERITY_UNITS: &[&str] = &["worker::queue"];

#[test]
fn celerity_modules_form_no_cycle() {
    assert_acyclic("celerity", CELERITY_UNITS);
}

#[test]
fn celerity_proto_modules_form_no_cycle() {
    assert_acyclic("celerity-proto", &[]);
}

#[test]
fn celerity_cli_and_testkit_modules_form_no_cycle() {
    assert_acyclic("celerity-cli", &[]);
    assert_acyclic("celerity-testkit", &[]);
}

#[test]
fn a_unit_counts_as_one_module_and_still_may_not_form_a_cycle_with_others() {
    let sources = [
        (vec![], "mod queue; mod root;"),
        (
            vec!["queue"],
            "mod fetch; pub struct QueueActor; fn f() { fetch::pull(); }",
        ),
        (
            vec!["queue", "fetch"],
            "use super::QueueActor; pub fn pull() {}",
        ),
        (vec!["root"], "use crate::queue::QueueActor;"),
    ];
    assert_eq!(
        Graph::from_sources(&sources, &["queue"]).cycles(),
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        Graph::from_sources(&sources, &[]).cycles(),
        vec![vec!["queue".to_owned(), "queue::fetch".to_owned()]]
    );
    let mut looped = sources.to_vec();
    looped[2] = (
        vec!["queue", "fetch"],
        "use crate::root::Root; pub fn pull() {}",
    );
    looped[3] = (
        vec!["root"],
        "use crate::queue::QueueActor; pub struct Root;",
    );
    assert_eq!(
        Graph::from_sources(&looped, &["queue"]).cycles(),
        vec![vec!["queue".to_owned(), "root".to_owned()]]
    );
}

#[test]
fn a_child_naming_its_parent_back_is_a_cycle() {
    let crate_graph = Graph::from_sources_plain(&[
        (vec![], "mod worker;"),
        (
            vec!["worker"],
            "mod queue; pub struct Worker; fn spawn() { queue::QueueActor::start(); }",
        ),
        (
            vec!["worker", "queue"],
            "use super::Worker; pub struct QueueActor;",
        ),
    ]);
    assert_eq!(
        crate_graph.cycles(),
        vec![vec!["worker".to_owned(), "worker::queue".to_owned()]]
    );
}

#[test]
fn a_cycle_through_a_re_export_is_found_and_a_facade_is_not_one() {
    let crate_graph = Graph::from_sources_plain(&[
        (vec![], "mod a; mod b; pub use a::Alpha; pub use b::Beta;"),
        (vec!["a"], "pub struct Alpha; fn f(_: crate::Beta) {}"),
        (
            vec!["b"],
            "pub struct Beta; fn g() -> crate::Alpha { crate::Alpha }",
        ),
    ]);
    assert_eq!(
        crate_graph.cycles(),
        vec![vec!["a".to_owned(), "b".to_owned()]]
    );

    let layered = Graph::from_sources_plain(&[
        (vec![], "mod a; mod b; pub use a::Alpha; pub use b::Beta;"),
        (vec!["a"], "pub struct Alpha; fn f(_: crate::Beta) {}"),
        (
            vec!["b"],
            "pub struct Beta; #[cfg(test)] mod tests { use crate::Alpha; }",
        ),
    ]);
    assert_eq!(layered.cycles(), Vec::<Vec<String>>::new());
}

#[test]
fn grouped_renamed_and_aliased_imports_resolve_to_their_modules() {
    let crate_graph = Graph::from_sources_plain(&[
        (vec![], "mod a; mod b; mod c;"),
        (
            vec!["a"],
            "use crate::{b::{self as bee}, c::Gamma as G}; fn f() { bee::beta(); }",
        ),
        (vec!["b"], "pub fn beta() {}"),
        (vec!["c"], "pub struct Gamma; fn h() { crate::a::f2(); }"),
    ]);
    let edges = crate_graph.edges();
    assert!(
        edges.contains(&("a".to_owned(), "b".to_owned())),
        "{edges:?}"
    );
    assert!(
        edges.contains(&("a".to_owned(), "c".to_owned())),
        "{edges:?}"
    );
    assert_eq!(
        crate_graph.cycles(),
        vec![vec!["a".to_owned(), "c".to_owned()]]
    );
}

fn assert_acyclic(crate_dir: &str, units: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let sources = read_crate(&src);
    let borrowed: Vec<(Vec<&str>, &str)> = sources
        .iter()
        .map(|(path, text)| (path.iter().map(String::as_str).collect(), text.as_str()))
        .collect();
    let graph = Graph::from_sources(&borrowed, units);
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "modules of {crate_dir} that name each other (move what both need to a module below them):\n{}",
        cycles
            .iter()
            .map(|cycle| format!("  {}\n{}", cycle.join(" <-> "), graph.explain(cycle)))
            .collect::<String>()
    );
}

/// Every `.rs` file under `src`, with the module path it defines.
fn read_crate(src: &Path) -> Vec<(ModPath, String)> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source directory is readable") {
            let path = entry.expect("a directory entry is readable").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files
        .into_iter()
        .filter_map(|file| {
            let module = module_path(src, &file)?;
            let text = std::fs::read_to_string(&file).expect("a source file is readable");
            Some((module, text))
        })
        .collect()
}

/// `src/worker/queue.rs` and `src/worker/queue/mod.rs` are `worker::queue`; a `tests.rs` file is
/// test code, and `main.rs` or `bin/` files are not modules of the library.
fn module_path(src: &Path, file: &Path) -> Option<ModPath> {
    let relative: PathBuf = file.strip_prefix(src).ok()?.with_extension("");
    let mut segments: ModPath = relative
        .components()
        .map(|component| component.as_os_str().to_string_lossy().into_owned())
        .collect();
    match segments.last().map(String::as_str) {
        Some("lib") if segments.len() == 1 => segments.clear(),
        Some("mod") => {
            segments.pop();
        }
        Some("tests" | "main") => return None,
        _ => {}
    }
    if segments.first().is_some_and(|first| first == "bin") {
        return None;
    }
    Some(segments)
}

/// What one file says about names: its own items, its imports and the paths its code uses.
#[derive(Default)]
struct FileFacts {
    /// Names of items defined in the file (types, functions, constants, inline modules...).
    defined: BTreeSet<String>,
    /// `pub use` leaves: local name to the path it re-exports.
    reexports: BTreeMap<String, Vec<String>>,
    /// `pub use path::*` sources.
    glob_reexports: Vec<Vec<String>>,
    /// Non-`pub` `use` leaves: local name to the path it imports (`*` for a glob).
    imports: Vec<(String, Vec<String>)>,
    /// Paths of two or more segments used in code.
    paths: Vec<Vec<String>>,
}

struct FactCollector<'a> {
    facts: &'a mut FileFacts,
    depth: usize,
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

fn item_attrs_and_name(item: &syn::Item) -> (&[syn::Attribute], Option<String>) {
    use syn::Item;
    match item {
        Item::Const(i) => (&i.attrs, Some(i.ident.to_string())),
        Item::Enum(i) => (&i.attrs, Some(i.ident.to_string())),
        Item::Fn(i) => (&i.attrs, Some(i.sig.ident.to_string())),
        Item::Macro(i) => (&i.attrs, i.ident.as_ref().map(ToString::to_string)),
        Item::Mod(i) => (&i.attrs, Some(i.ident.to_string())),
        Item::Static(i) => (&i.attrs, Some(i.ident.to_string())),
        Item::Struct(i) => (&i.attrs, Some(i.ident.to_string())),
        Item::Trait(i) => (&i.attrs, Some(i.ident.to_string())),
        Item::Type(i) => (&i.attrs, Some(i.ident.to_string())),
        Item::Union(i) => (&i.attrs, Some(i.ident.to_string())),
        Item::Impl(i) => (&i.attrs, None),
        Item::Use(i) => (&i.attrs, None),
        _ => (&[], None),
    }
}

/// Flattens a use tree into (local name, path) leaves; a glob's name is `*`.
fn use_leaves(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            use_leaves(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) if name.ident == "self" => {
            let local = prefix.last().cloned().unwrap_or_default();
            out.push((local, prefix.clone()));
        }
        syn::UseTree::Name(name) => {
            let mut full = prefix.clone();
            full.push(name.ident.to_string());
            out.push((name.ident.to_string(), full));
        }
        syn::UseTree::Rename(rename) => {
            let mut full = prefix.clone();
            if rename.ident != "self" {
                full.push(rename.ident.to_string());
            }
            out.push((rename.rename.to_string(), full));
        }
        syn::UseTree::Glob(_) => out.push(("*".to_owned(), prefix.clone())),
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                use_leaves(tree, prefix, out);
            }
        }
    }
}

impl<'ast> Visit<'ast> for FactCollector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let (attrs, name) = item_attrs_and_name(item);
        if is_test_only(attrs) {
            return;
        }
        if let (0, Some(name)) = (self.depth, name) {
            self.facts.defined.insert(name);
        }
        if let syn::Item::Use(item_use) = item {
            let mut leaves = Vec::new();
            use_leaves(&item_use.tree, &mut Vec::new(), &mut leaves);
            let public = !matches!(item_use.vis, syn::Visibility::Inherited);
            for (local, path) in leaves {
                match (public && self.depth == 0, local.as_str()) {
                    (true, "*") => self.facts.glob_reexports.push(path),
                    (true, _) => {
                        self.facts.reexports.insert(local, path);
                    }
                    (false, _) => self.facts.imports.push((local, path)),
                }
            }
            return;
        }
        let nested = matches!(item, syn::Item::Mod(_));
        self.depth += usize::from(nested);
        syn::visit::visit_item(self, item);
        self.depth -= usize::from(nested);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() >= 2 {
            self.facts.paths.push(
                path.segments
                    .iter()
                    .map(|segment| segment.ident.to_string())
                    .collect(),
            );
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Paths inside `format!`-like macros are expressions; parse what parses as such.
        let parsed = mac.parse_body_with(
            syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated,
        );
        if let Ok(exprs) = parsed {
            for expr in &exprs {
                self.visit_expr(expr);
            }
        }
        syn::visit::visit_macro(self, mac);
    }
}

struct Graph {
    modules: BTreeMap<ModPath, FileFacts>,
    /// Edge (from, to) with the path that made it, for the failure message.
    edges: BTreeMap<(ModPath, ModPath), String>,
    /// Modules counted with everything below them as one.
    units: Vec<ModPath>,
}

impl Graph {
    fn from_sources_plain(sources: &[(Vec<&str>, &str)]) -> Graph {
        Graph::from_sources(sources, &[])
    }

    fn from_sources(sources: &[(Vec<&str>, &str)], units: &[&str]) -> Graph {
        let mut modules = BTreeMap::new();
        for (path, text) in sources {
            let file = syn::parse_file(text).expect("a source file parses");
            let mut facts = FileFacts::default();
            FactCollector {
                facts: &mut facts,
                depth: 0,
            }
            .visit_file(&file);
            modules.insert(path.iter().map(|s| (*s).to_owned()).collect(), facts);
        }
        let units = units
            .iter()
            .map(|unit| unit.split("::").map(str::to_owned).collect())
            .collect();
        let mut graph = Graph {
            modules,
            edges: BTreeMap::new(),
            units,
        };
        graph.link();
        graph
    }

    fn link(&mut self) {
        let mut edges = BTreeMap::new();
        for (module, facts) in &self.modules {
            let aliases: HashMap<&str, ModPath> = facts
                .imports
                .iter()
                .filter(|(local, _)| local != "*")
                .filter_map(|(local, path)| Some((local.as_str(), self.absolute(module, path)?)))
                .collect();
            let imported = facts
                .imports
                .iter()
                .filter_map(|(_, path)| Some((path, self.absolute(module, path)?)));
            let used = facts.paths.iter().filter_map(|path| {
                let absolute = match aliases.get(path[0].as_str()) {
                    Some(target) => target.iter().chain(&path[1..]).cloned().collect(),
                    None => self.absolute(module, path)?,
                };
                Some((path, absolute))
            });
            let from = self.unit_of(module);
            for (path, absolute) in imported.chain(used) {
                let target = self.unit_of(&self.defining_module(&absolute, 0));
                if target != from {
                    edges
                        .entry((from.clone(), target))
                        .or_insert_with(|| path.join("::"));
                }
            }
        }
        self.edges = edges;
    }

    /// The module that stands for `module` in the graph: the unit it belongs to, or itself.
    fn unit_of(&self, module: &ModPath) -> ModPath {
        self.units
            .iter()
            .find(|unit| module.starts_with(unit))
            .cloned()
            .unwrap_or_else(|| module.clone())
    }

    /// `path` as seen from `module`, from the crate root; `None` for other crates and std.
    fn absolute(&self, module: &ModPath, path: &[String]) -> Option<ModPath> {
        let mut base = match path.first()?.as_str() {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => module[..module.len().checked_sub(1)?].to_vec(),
            first => {
                let mut child = module.clone();
                child.push(first.to_owned());
                if !self.modules.contains_key(&child) {
                    return None;
                }
                return Some(child.into_iter().chain(path[1..].iter().cloned()).collect());
            }
        };
        let mut rest = &path[1..];
        while rest.first().is_some_and(|segment| segment == "super") {
            base.pop();
            rest = &rest[1..];
        }
        Some(base.into_iter().chain(rest.iter().cloned()).collect())
    }

    /// The module whose file defines the item `absolute` names, following re-exports.
    fn defining_module(&self, absolute: &[String], hops: usize) -> ModPath {
        let split = (0..=absolute.len())
            .rev()
            .find(|&n| self.modules.contains_key(&absolute[..n]))
            .unwrap_or(0);
        let module = absolute[..split].to_vec();
        let Some(name) = absolute.get(split) else {
            return module;
        };
        // An item at a crate's root (`crate::connect` in a binary) is the root's own.
        let Some(facts) = self.modules.get(&module) else {
            return module;
        };
        if hops > 8 || facts.defined.contains(name) {
            return module;
        }
        let reexported = facts.reexports.get(name);
        if let Some(target) = reexported.and_then(|target| self.absolute(&module, target)) {
            let rest = target
                .into_iter()
                .chain(absolute[split + 1..].iter().cloned());
            return self.defining_module(&rest.collect::<Vec<_>>(), hops + 1);
        }
        let defines = |source: &ModPath| {
            self.modules
                .get(source)
                .is_some_and(|facts| facts.defined.contains(name))
        };
        if let Some(source) = facts
            .glob_reexports
            .iter()
            .filter_map(|glob| self.absolute(&module, glob))
            .find(defines)
        {
            return source;
        }
        module
    }

    fn edges(&self) -> Vec<(String, String)> {
        self.edges
            .keys()
            .map(|(from, to)| (display(from), display(to)))
            .collect()
    }

    /// Strongly connected components of more than one module (Tarjan), each sorted.
    fn cycles(&self) -> Vec<Vec<String>> {
        let nodes: BTreeSet<ModPath> = self
            .modules
            .keys()
            .map(|module| self.unit_of(module))
            .collect();
        let nodes: Vec<&ModPath> = nodes.iter().collect();
        let index_of: HashMap<&ModPath, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (*node, i))
            .collect();
        let mut successors = vec![Vec::new(); nodes.len()];
        for (from, to) in self.edges.keys() {
            if let (Some(&from), Some(&to)) = (index_of.get(from), index_of.get(to)) {
                successors[from].push(to);
            }
        }
        let mut tarjan = Tarjan::new(successors);
        for node in 0..nodes.len() {
            tarjan.visit(node);
        }
        let mut cycles: Vec<Vec<String>> = tarjan
            .components
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|component| {
                let mut names: Vec<String> = component.iter().map(|&i| display(nodes[i])).collect();
                names.sort();
                names
            })
            .collect();
        cycles.sort();
        cycles
    }

    /// The edges inside one cycle, with the path that made each.
    fn explain(&self, cycle: &[String]) -> String {
        self.edges
            .iter()
            .filter(|((from, to), _)| {
                cycle.contains(&display(from)) && cycle.contains(&display(to))
            })
            .map(|((from, to), path)| {
                format!("    {} -> {} (uses {path})\n", display(from), display(to))
            })
            .collect()
    }
}

fn display(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

struct Tarjan {
    successors: Vec<Vec<usize>>,
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan {
    fn new(successors: Vec<Vec<usize>>) -> Tarjan {
        let n = successors.len();
        Tarjan {
            successors,
            index: vec![None; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            next: 0,
            components: Vec::new(),
        }
    }

    fn visit(&mut self, node: usize) {
        if self.index[node].is_some() {
            return;
        }
        self.index[node] = Some(self.next);
        self.low[node] = self.next;
        self.next += 1;
        self.stack.push(node);
        self.on_stack[node] = true;
        for successor in self.successors[node].clone() {
            match self.index[successor] {
                None => {
                    self.visit(successor);
                    self.low[node] = self.low[node].min(self.low[successor]);
                }
                Some(index) if self.on_stack[successor] => {
                    self.low[node] = self.low[node].min(index);
                }
                Some(_) => {}
            }
        }
        if Some(self.low[node]) == self.index[node] {
            let mut component = Vec::new();
            while let Some(member) = self.stack.pop() {
                self.on_stack[member] = false;
                component.push(member);
                if member == node {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}
