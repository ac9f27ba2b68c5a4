//! The shell's backslash commands, defined once: parsing, `\help` and completion read this
//! table.

/// A backslash command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Describe,
    Projects,
    Runs,
    Timing,
    Expanded,
    Format,
    Output,
    Include,
    Edit,
    Plot,
    Help,
    Quit,
}

/// Name(s), arguments and help of every command.
pub const META: &[(Meta, &[&str], &str, &str)] = &[
    (
        Meta::Describe,
        &["\\d"],
        "[TABLE]",
        "list tables, or show one's columns, types and meaning",
    ),
    (
        Meta::Projects,
        &["\\dp"],
        "",
        "list projects with their runs",
    ),
    (
        Meta::Runs,
        &["\\runs"],
        "[PROJECT]",
        "the latest runs (of one project)",
    ),
    (
        Meta::Timing,
        &["\\timing"],
        "[on|off]",
        "print how long each statement took",
    ),
    (
        Meta::Expanded,
        &["\\x"],
        "[on|off]",
        "expanded output: one block per row",
    ),
    (
        Meta::Format,
        &["\\format"],
        "[FORMAT]",
        "output format: table, csv, json, ndjson, markdown",
    ),
    (
        Meta::Output,
        &["\\o"],
        "[FILE]",
        "write results to FILE (no argument: back to the terminal)",
    ),
    (Meta::Include, &["\\i"], "FILE", "run the SQL in FILE"),
    (
        Meta::Edit,
        &["\\e"],
        "",
        "edit the current (or last) statement in $EDITOR, then run it",
    ),
    (
        Meta::Plot,
        &["\\plot"],
        "KEY [RUN…] [--out F.svg]",
        "draw runs' curves of a metric (default: the 5 latest runs)",
    ),
    (Meta::Help, &["\\help", "\\?", "\\h"], "", "this list"),
    (Meta::Quit, &["\\q", "\\quit"], "", "quit (also Ctrl-D)"),
];

/// Parses `\name args…`.
pub fn parse(line: &str) -> Option<(Meta, String)> {
    let line = line.trim().trim_end_matches(';');
    let (name, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    META.iter()
        .find(|(_, names, _, _)| names.contains(&name))
        .map(|(m, _, _, _)| (*m, args.trim().to_string()))
}

/// Every command name, for completion.
pub fn names() -> impl Iterator<Item = &'static str> {
    META.iter()
        .flat_map(|(_, names, _, _)| names.iter().copied())
}

/// The `\help` text.
pub fn help() -> String {
    let mut out = String::from(
        "Statements end with `;` and may span lines. Ctrl-C cancels a running query.\n\n",
    );
    for (_, names, args, help) in META {
        let left = format!("{} {args}", names[0]);
        out.push_str(&format!("  {left:<18} {help}\n"));
    }
    out.push_str("\nTables: runs, params, tags, metrics, system_metrics, artifacts, logs, inputs,\nmetric_summary, projects, params_wide, metrics_wide; curves(points). docs/sql.md has examples.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_arguments() {
        assert_eq!(
            parse("\\d metrics"),
            Some((Meta::Describe, "metrics".into()))
        );
        assert_eq!(parse("\\x on;"), Some((Meta::Expanded, "on".into())));
        assert_eq!(parse("\\?"), Some((Meta::Help, String::new())));
        assert_eq!(parse("\\nope"), None);
    }
}
