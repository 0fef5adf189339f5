//! The server's layers import only downward (edge → service → engine → store), so a wire
//! format never leaks into the operations and the engine runs without knowing any API.
//! Read from the sources: a `use` of a higher layer anywhere below it fails here.

use std::path::{Path, PathBuf};

/// The modules of each layer, by every name the crate gives them (lib.rs re-exports the
/// old flat names, which must not become a way around the rule).
const EDGE: [&str; 8] = ["edge", "rest", "grpc", "v1", "v1_access", "admin", "guard", "connections"];
const SERVICE: [&str; 10] =
    ["service", "access", "cloud_tasks", "dead_letters", "jobs", "operations", "page_token", "policy", "proto", "pull"];

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Every `crate::x` a file names, as (line number, x).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            out.push((n + 1, name));
            rest = after;
        }
    }
    out
}

fn violations(layer: &str, above: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(layer);
    let mut found = Vec::new();
    for file in sources(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, name) in crate_paths(&text) {
            if above.contains(&name.as_str()) {
                found.push(format!("{}:{line} uses crate::{name}", file.display()));
            }
        }
    }
    found
}

#[test]
fn imports_go_only_downward() {
    let service_up = violations("service", &EDGE);
    assert!(service_up.is_empty(), "services import the edge:\n{}", service_up.join("\n"));
    let above_engine: Vec<&str> = EDGE.iter().chain(SERVICE.iter()).copied().collect();
    let engine_up = violations("engine", &above_engine);
    assert!(engine_up.is_empty(), "the engine imports a service or an edge:\n{}", engine_up.join("\n"));
}

#[test]
fn the_check_sees_a_violation() {
    // The reader itself: a higher layer named anywhere on a line is found.
    let found = crate_paths("use crate::rest::wire; let x = crate::service::store_status(e);");
    assert_eq!(found, [(1, "rest".to_string()), (1, "service".to_string())]);
}
