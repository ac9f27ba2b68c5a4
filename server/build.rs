//! Embeds the dashboard: every file below `ui/` (plain ES modules, styles, the page) becomes an
//! entry of `ASSETS` in `$OUT_DIR/ui_assets.rs`, so that adding a module to the page is adding
//! its file — no list to keep in step by hand.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join("ui");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    let mut out = String::from(
        "/// The page's files: path below `ui/`, content.\npub(crate) const ASSETS: &[(&str, &str)] = &[\n",
    );
    for rel in &files {
        let abs = root.join(rel);
        writeln!(
            out,
            "    ({rel:?}, include_str!({:?})),",
            abs.display().to_string()
        )
        .expect("writing to a String");
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("ui_assets.rs");
    std::fs::write(&dest, out).expect("cannot write ui_assets.rs");
}

/// Every file below `dir`, as a `/`-separated path relative to `root`; folders are watched too
/// (a new file in a folder reruns the script).
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries {
        let e = e.expect("reading server/ui");
        let path = e.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            walk(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).expect("below root");
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(rel.join("/"));
        }
    }
}
