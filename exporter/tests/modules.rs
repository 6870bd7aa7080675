//! The exporter's modules form an acyclic graph: reading each source
//! file's `crate::` paths (comments left out), no module reaches back to
//! one that reaches it. An import circle is how two modules stop being
//! separable; this keeps it from coming back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a source file belongs to (`quantize/plan.rs` is
/// `quantize`); `None` for the crate root and the binary.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The modules each module's code names through `crate::`.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(from) = module_of(path.strip_prefix(src).unwrap()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let named = out.entry(from.clone()).or_default();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let to: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    // `crate::ExportError` is the root's re-export of `error`.
                    let to = if to == "ExportError" {
                        "error".into()
                    } else {
                        to
                    };
                    if to != from {
                        named.insert(to);
                    }
                }
            }
        }
    }
    out
}

/// A cycle through `node`, if one is reachable from it.
fn cycle(
    g: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| p == node) {
        return Some(
            path[i..]
                .iter()
                .cloned()
                .chain([node.to_string()])
                .collect(),
        );
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in g.get(node).into_iter().flatten() {
        if let Some(c) = cycle(g, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn the_exporter_s_modules_import_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = edges(&src);
    assert!(g.len() > 10, "read {} modules: {g:?}", g.len());
    assert!(g["verify"].contains("measure"), "{g:?}");
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(c) = cycle(&g, m, &mut vec![], &mut done) {
            panic!("import circle: {}", c.join(" -> "));
        }
    }
    // The errors are a leaf: every module names them, they name none.
    assert!(g["error"].is_empty(), "{:?}", g["error"]);
}
