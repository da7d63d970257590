//! The crate's module graph stays as `docs/ARCHITECTURE.md` draws it: no cycles between the
//! top-level modules, and `pipeline` a leaf (frame and pool only), so that sources, stages,
//! outputs and telemetry can share its types without depending on each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules its non-test code names as `crate::<module>`.
fn top_level_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect_rust_files(&src, &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests may reach anywhere; the graph is about the code that ships.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let entry = deps.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if !name.is_empty() && name != module {
                entry.insert(name);
            }
        }
    }
    deps
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A cycle through `start`, if there is one (depth-first search).
fn cycle_through(deps: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        deps: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let here = path.last().unwrap().clone();
        for next in deps.get(&here).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(deps, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(deps, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn top_level_modules_form_no_cycle() {
    let deps = top_level_dependencies();
    assert!(deps.len() > 10, "expected the crate's modules, found {:?}", deps.keys());
    for module in deps.keys() {
        if let Some(cycle) = cycle_through(&deps, module) {
            panic!("module cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn pipeline_is_a_leaf() {
    let deps = top_level_dependencies();
    let pipeline = deps.get("pipeline").expect("src/pipeline exists");
    let allowed: BTreeSet<String> = ["frame", "pool"].iter().map(|s| s.to_string()).collect();
    let extra: Vec<&String> = pipeline.difference(&allowed).collect();
    assert!(extra.is_empty(), "pipeline must depend on frame and pool only, not on {extra:?}");
}

#[test]
fn the_check_sees_a_cycle() {
    // The checker itself: a made-up graph with a cycle must be caught.
    let mut deps = BTreeMap::new();
    deps.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    deps.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    deps.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle_through(&deps, "a").unwrap(), ["a", "b", "c", "a"]);
    deps.get_mut("c").unwrap().clear();
    assert!(cycle_through(&deps, "a").is_none());
}
