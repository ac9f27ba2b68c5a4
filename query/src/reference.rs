//! The SQL reference of every table, pivot table and function, generated from the definitions
//! (core's schema list, `projects`, [`crate::wide`], [`crate::functions`]) so that docs/sql.md, the shell's
//! `\d` and the code cannot disagree. A test keeps docs/sql.md equal to [`markdown`].

use std::fmt::Write;

use runql_core::schema::{Kind, Table};

use crate::functions::FUNCTIONS;
use crate::wide::WIDE_TABLES;

/// A column's type as SQL spells it.
pub fn sql_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Utf8 => "VARCHAR",
        Kind::Int64 => "BIGINT",
        Kind::Float64 => "DOUBLE",
        Kind::Boolean => "BOOLEAN",
        Kind::Timestamp => "TIMESTAMP (µs, UTC)",
    }
}

/// The markdown reference (the generated part of docs/sql.md).
pub fn markdown() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Tables\n");
    for t in Table::ALL {
        let _ = writeln!(out, "### `{}`\n\n{}\n", t.name(), t.doc());
        let _ = writeln!(out, "| column | type | null | meaning |\n|---|---|---|---|");
        for c in t.columns() {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                c.name,
                sql_type(c.kind),
                if c.nullable { "yes" } else { "no" },
                c.doc
            );
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "### `{}`\n\n{}\n",
        crate::projects::NAME,
        crate::projects::DOC
    );
    let _ = writeln!(out, "| column | type | null | meaning |\n|---|---|---|---|");
    for (name, kind, nullable, doc) in crate::projects::COLUMNS {
        let _ = writeln!(
            out,
            "| `{name}` | {} | {} | {doc} |",
            sql_type(*kind),
            if *nullable { "yes" } else { "no" },
        );
    }
    out.push('\n');
    let _ = writeln!(out, "## Pivot tables\n");
    for (name, doc) in WIDE_TABLES {
        let _ = writeln!(
            out,
            "### `{name}`\n\nColumns `project`, `run_id`, then {doc}. Computed when a query \
             names it, over every project.\n"
        );
    }
    let _ = writeln!(out, "## Functions\n");
    for (signature, doc) in FUNCTIONS {
        let _ = writeln!(out, "### `{signature}`\n\n{doc}\n");
    }
    out
}
