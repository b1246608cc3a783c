//! The layering the modules keep, checked on the source: a module that reaches into one it
//! must not (routing into the data plane, say) fails this test with the file and line.

use std::fs;
use std::path::{Path, PathBuf};

/// Each module and the modules it must never name.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("routing", &["controller", "dataplane", "what_if"]),
    (
        "classify",
        &["routing", "dataplane", "controller", "what_if"],
    ),
    ("cache", &["dataplane", "routing", "controller", "what_if"]),
    ("api", &["routing", "dataplane", "controller", "what_if"]),
    ("dataplane", &["controller", "what_if"]),
    ("stream", &["dataplane", "cache", "routing", "controller"]),
];

/// Every `.rs` file of module `name`: `src/name.rs` and everything under `src/name/`.
fn files(src: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let single = src.join(format!("{name}.rs"));
    if single.is_file() {
        out.push(single);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The top-level modules a line names through `crate::`, including `crate::{a, b::c}`.
fn named_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            out.push(first_segment(&item));
        } else {
            out.push(first_segment(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn modules_never_name_the_layers_they_must_not_use() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut breaches = Vec::new();
    for (module, forbidden) in FORBIDDEN {
        let files = files(&src, module);
        assert!(!files.is_empty(), "module {module} has no source files");
        for file in files {
            let text = fs::read_to_string(&file).expect("source is readable");
            for (n, line) in text.lines().enumerate() {
                for named in named_modules(line) {
                    if forbidden.contains(&named.as_str()) {
                        breaches.push(format!(
                            "{}:{}: {module} must not use {named}",
                            file.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(breaches.is_empty(), "{}", breaches.join("\n"));
}

#[test]
fn grouped_and_nested_imports_are_read() {
    assert_eq!(
        named_modules("use crate::{api::X, routing::{A, B}, dataplane};"),
        ["api", "routing", "dataplane"]
    );
    assert_eq!(
        named_modules("let x = crate::routing::f(); // crate::controller"),
        ["routing"]
    );
}
