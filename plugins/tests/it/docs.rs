//! docs/sql.md lists the first-party plugins' tables and columns; this test regenerates that
//! section from the plugins themselves (what their components declare) and fails when the
//! file is stale. `RUNQL_UPDATE_DOCS=1 cargo test -p runql-plugins --test it docs` rewrites it.

use runql_plugins::registry::BUILTIN;
use runql_plugins::sandbox::{Limits, Sandbox};

const BEGIN: &str = "<!-- plugins:begin (generated from the first-party plugins; do not edit) -->";
const END: &str = "<!-- plugins:end -->";

fn sql_type(t: &arrow::datatypes::DataType) -> &'static str {
    use arrow::datatypes::DataType::*;
    match t {
        Utf8 | LargeUtf8 | Utf8View => "VARCHAR",
        Int64 => "BIGINT",
        Int32 => "INT",
        Float64 => "DOUBLE",
        Boolean => "BOOLEAN",
        _ => "OTHER",
    }
}

fn markdown() -> String {
    let sandbox = Sandbox::new(None).expect("sandbox");
    let mut out = String::new();
    for b in BUILTIN {
        let info = sandbox
            .load(b.name, b.wasm)
            .and_then(|l| l.info(&sandbox, &Limits::default()))
            .expect("a first-party plugin describes itself");
        out.push_str(&format!(
            "### Plugin `{}`\n\n{}.\n\n",
            info.name, info.description
        ));
        for t in &info.tables {
            out.push_str(&format!(
                "#### `{}.{}`\n\n{}.\n\n",
                info.name, t.name, t.doc
            ));
            out.push_str("| column | type |\n|---|---|\n");
            out.push_str("| `project` | VARCHAR |\n| `run_id` | VARCHAR — the run the file was ingested into |\n");
            for f in t.schema.fields() {
                let note = if f.name() == "run_key" {
                    " — the id of the row's own run"
                } else {
                    ""
                };
                out.push_str(&format!(
                    "| `{}` | {}{note} |\n",
                    f.name(),
                    sql_type(f.data_type())
                ));
            }
            out.push('\n');
        }
    }
    out
}

#[test]
fn docs_list_every_plugin_table_and_column() {
    let path = format!(
        "{}/../docs/sql.md",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    let doc = std::fs::read_to_string(&path).expect("docs/sql.md");
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/sql.md has no {BEGIN} … {END} section");
    };
    let fresh = format!("{BEGIN}\n\n{}{END}", markdown());
    let current = &doc[b..e + END.len()];
    if current == fresh {
        return;
    }
    if std::env::var_os("RUNQL_UPDATE_DOCS").is_some() {
        let updated = format!("{}{fresh}{}", &doc[..b], &doc[e + END.len()..]);
        std::fs::write(&path, updated).expect("write docs/sql.md");
        return;
    }
    panic!(
        "docs/sql.md's plugin tables are stale: run RUNQL_UPDATE_DOCS=1 cargo test -p runql-plugins --test it docs"
    );
}
