//! The interactive SQL shell: multi-line statements ending in `;`, history, completion of SQL
//! and of the store's own names, backslash commands, Ctrl-C to cancel a query.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::Array;
use runql_core::schema::Table;
use runql_query::Engine;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Editor, Helper};
use tokio::runtime::Runtime;

use crate::format::{self, Format, TextLayout};
use crate::meta::{self, Meta};
use crate::query::{collect, quote, terminal_width};
use crate::split;

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "JOIN",
    "LEFT JOIN",
    "FULL JOIN",
    "USING",
    "ON",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS NULL",
    "IS NOT NULL",
    "LIKE",
    "ILIKE",
    "BETWEEN",
    "DISTINCT",
    "COUNT",
    "MIN",
    "MAX",
    "AVG",
    "SUM",
    "WITH",
    "OVER",
    "PARTITION BY",
    "ROW_NUMBER",
    "LAST_VALUE",
    "FILTER",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DESC",
    "ASC",
    "UNION ALL",
    "EXPLAIN",
    "DESCRIBE",
    "SHOW TABLES",
    "CAST",
    "ROUND",
    "DATE_TRUNC",
    "NOW",
    "INTERVAL",
    "TRUE",
    "FALSE",
    "NULL",
];

/// What the shell completes: SQL words, tables and columns, and (inside quotes) the store's
/// projects, metric keys and param keys.
struct Completion {
    words: Vec<String>,
    values: Vec<String>,
}

impl Completion {
    fn load(rt: &Runtime, engine: &Engine) -> Completion {
        let mut words: Vec<String> = KEYWORDS.iter().map(|k| k.to_string()).collect();
        for t in Table::ALL {
            words.push(t.name().to_string());
            words.extend(t.columns().iter().map(|c| c.name.to_string()));
        }
        words.extend(["params_wide", "metrics_wide", "curves", "sparkline"].map(String::from));
        // Extension tables (plugins), as schema.table.
        if let Ok((_, batches)) = rt.block_on(collect(
            engine,
            "SELECT table_schema || '.' || table_name FROM information_schema.tables \
             WHERE table_schema NOT IN ('public', 'information_schema')",
        )) {
            for b in &batches {
                let c = arrow::array::AsArray::as_string::<i32>(b.column(0));
                words.extend((0..c.len()).map(|i| c.value(i).to_string()));
            }
        }
        words.sort();
        words.dedup();
        let mut values = Vec::new();
        for sql in [
            "SELECT DISTINCT project FROM runs",
            "SELECT DISTINCT key FROM metric_summary",
            "SELECT DISTINCT key FROM params",
        ] {
            if let Ok((_, batches)) = rt.block_on(collect(engine, sql)) {
                for b in &batches {
                    let c = arrow::array::AsArray::as_string::<i32>(b.column(0));
                    values.extend((0..c.len()).map(|i| c.value(i).to_string()));
                }
            }
        }
        values.sort();
        values.dedup();
        Completion { words, values }
    }

    fn complete(&self, line: &str, pos: usize) -> (usize, Vec<Pair>) {
        let before = &line[..pos];
        let in_string = before.matches('\'').count() % 2 == 1;
        // Byte index just after the last character that ends a word (char-aware: a pasted
        // non-breaking space or curly quote is several bytes).
        let after = |i: usize| i + before[i..].chars().next().map_or(1, char::len_utf8);
        let start = if in_string {
            before.rfind('\'').map_or(0, after)
        } else {
            before
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\\' || c == '.'))
                .map_or(0, after)
        };
        let prefix = &before[start..];
        let pairs = |it: &mut dyn Iterator<Item = &str>| -> Vec<Pair> {
            it.map(|s| Pair {
                display: s.to_string(),
                replacement: s.to_string(),
            })
            .collect()
        };
        if in_string {
            return (
                start,
                pairs(
                    &mut self
                        .values
                        .iter()
                        .map(String::as_str)
                        .filter(|v| v.starts_with(prefix)),
                ),
            );
        }
        if prefix.is_empty() {
            return (start, Vec::new());
        }
        if prefix.starts_with('\\') {
            return (
                start,
                pairs(&mut meta::names().filter(|n| n.starts_with(prefix))),
            );
        }
        let matching = |prefix: &str| -> Vec<Pair> {
            let lower = prefix.chars().all(|c| !c.is_uppercase());
            self.words
                .iter()
                .filter(|w| w.to_lowercase().starts_with(&prefix.to_lowercase()))
                .map(|w| {
                    let w = if lower { w.to_lowercase() } else { w.clone() };
                    Pair {
                        display: w.clone(),
                        replacement: w,
                    }
                })
                .collect()
        };
        let found = matching(prefix);
        // `alias.col` and `schema.table`: complete what follows the last dot.
        if found.is_empty()
            && let Some(dot) = prefix.rfind('.')
        {
            return (start + dot + 1, matching(&prefix[dot + 1..]));
        }
        (start, found)
    }
}

struct ShellHelper {
    completion: Completion,
}

impl Completer for ShellHelper {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        Ok(self.completion.complete(line, pos))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

/// The shell's settings, changed by backslash commands.
struct State {
    format: Format,
    expanded: bool,
    timing: bool,
    /// Where results go instead of the terminal, and whether a result went there already.
    output: Option<(PathBuf, std::fs::File, bool)>,
    last: Option<String>,
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("RUNQL_HISTORY")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".runql_history")))
}

/// Runs the shell until `\q` or Ctrl-D. `suggested` queries are printed first.
pub fn run(rt: &Runtime, engine: Engine, suggested: &[(&str, &str)]) -> Result<()> {
    let helper = ShellHelper {
        completion: Completion::load(rt, &engine),
    };
    let mut editor: Editor<ShellHelper, DefaultHistory> =
        Editor::new().context("cannot start the line editor")?;
    editor.set_helper(Some(helper));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!(
        "runql {} — SQL over {}. \\help for commands, \\q to quit.",
        env!("CARGO_PKG_VERSION"),
        engine.store().url()
    );
    if !suggested.is_empty() {
        println!("\nTry these (copy one, or write your own):\n");
        for (title, sql) in suggested {
            println!("-- {title}\n{sql}\n");
        }
    }
    let mut state = State {
        format: Format::Table,
        expanded: false,
        timing: false,
        output: None,
        last: None,
    };
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "runql> "
        } else {
            "   ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if buffer.trim().is_empty() && line.trim_start().starts_with('\\') {
                    let _ = editor.add_history_entry(line.as_str());
                    match meta::parse(&line) {
                        Some((Meta::Quit, _)) => break,
                        Some((Meta::Edit, _)) => {
                            if let Some(sql) = edit(state.last.as_deref().unwrap_or(""))? {
                                run_text(rt, &engine, &mut state, &sql);
                            }
                        }
                        Some((m, args)) => {
                            if let Err(e) = run_meta(rt, &engine, &mut state, m, &args) {
                                eprintln!("error: {}", crate::message(&e));
                            }
                        }
                        None => eprintln!("unknown command {}: \\help lists them", line.trim()),
                    }
                    continue;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                let (statements, rest) = split::split(&buffer);
                if !statements.is_empty() {
                    let _ = editor.add_history_entry(buffer.trim());
                    for sql in statements {
                        run_statement(rt, &engine, &mut state, &sql);
                    }
                    buffer = if split::is_blank(&rest) {
                        String::new()
                    } else {
                        rest
                    };
                }
            }
            Err(ReadlineError::Interrupted) => {
                // Ctrl-C at the prompt drops the statement being typed.
                buffer.clear();
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

fn run_text(rt: &Runtime, engine: &Engine, state: &mut State, text: &str) {
    let (mut statements, rest) = split::split(text);
    if !split::is_blank(&rest) {
        statements.push(rest.trim().to_string());
    }
    for sql in statements {
        run_statement(rt, engine, state, &sql);
    }
}

fn run_statement(rt: &Runtime, engine: &Engine, state: &mut State, sql: &str) {
    state.last = Some(sql.to_string());
    let t = Instant::now();
    let spinner = crate::progress::Spinner::start("running (Ctrl-C cancels)");
    let result = rt.block_on(async {
        tokio::select! {
            r = collect(engine, sql) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let elapsed = t.elapsed();
    drop(spinner);
    match result {
        None => eprintln!("cancelled"),
        Some(Err(e)) => eprintln!("error: {}", crate::message(&e)),
        Some(Ok((schema, batches))) => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let layout = TextLayout {
                width: if state.output.is_none() {
                    terminal_width()
                } else {
                    None
                },
                expanded: state.expanded,
                ..TextLayout::default()
            };
            let written = match &mut state.output {
                // A Parquet file or an Arrow stream holds one result: a second one appended
                // would make it unreadable.
                Some((path, _, true)) if state.format.is_binary() => Err(anyhow::anyhow!(
                    "{} already holds a {} result; start another file with \\o FILE",
                    path.display(),
                    state.format.name()
                )),
                Some((_, file, written)) => {
                    *written = true;
                    format::write(file, state.format, &schema, &batches, layout)
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    format::write(&mut out, state.format, &schema, &batches, layout)
                }
            };
            if let Err(e) = written {
                eprintln!("error: {}", crate::message(&e));
                return;
            }
            let mut note = format!("{rows} row{}", if rows == 1 { "" } else { "s" });
            if state.timing {
                note.push_str(&format!(" in {:.1} ms", elapsed.as_secs_f64() * 1000.0));
            }
            if schema.fields().is_empty() {
                return;
            }
            println!("({note})");
        }
    }
}

fn on_off(args: &str, current: bool) -> Result<bool> {
    match args {
        "" => Ok(!current),
        "on" => Ok(true),
        "off" => Ok(false),
        other => anyhow::bail!("expected on or off, not {other:?}"),
    }
}

fn run_meta(rt: &Runtime, engine: &Engine, state: &mut State, m: Meta, args: &str) -> Result<()> {
    match m {
        Meta::Describe if args.is_empty() => {
            run_statement(
                rt,
                engine,
                state,
                "SELECT table_schema AS schema, table_name AS name, table_type AS kind \
                 FROM information_schema.tables WHERE table_schema <> 'information_schema' \
                 ORDER BY 1, 2",
            );
        }
        Meta::Describe => match Table::from_name(args) {
            Some(t) => {
                println!("{}\n", t.doc());
                let mut table = comfy_table::Table::new();
                table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
                if let Some(w) = terminal_width() {
                    table.set_width(w);
                }
                table.set_header(["column", "type", "null", "meaning"]);
                for c in t.columns() {
                    table.add_row([
                        c.name,
                        runql_query::reference::sql_type(c.kind),
                        if c.nullable { "yes" } else { "no" },
                        c.doc,
                    ]);
                }
                println!("{table}");
            }
            None => run_statement(rt, engine, state, &format!("DESCRIBE {args}")),
        },
        Meta::Projects => run_statement(
            rt,
            engine,
            state,
            "SELECT project, count(*) AS runs, count(*) FILTER (WHERE status = 'running') AS running, \
             count(*) FILTER (WHERE status IN ('failed', 'crashed')) AS failed, max(created) AS latest \
             FROM runs GROUP BY project ORDER BY project",
        ),
        Meta::Runs => {
            let filter = if args.is_empty() {
                String::new()
            } else {
                format!("WHERE project = {}", quote(args))
            };
            run_statement(
                rt,
                engine,
                state,
                &format!(
                    "SELECT run_id, project, name, status, created FROM runs {filter} \
                     ORDER BY created DESC LIMIT 20"
                ),
            );
        }
        Meta::Timing => {
            state.timing = on_off(args, state.timing)?;
            println!("timing is {}", if state.timing { "on" } else { "off" });
        }
        Meta::Expanded => {
            state.expanded = on_off(args, state.expanded)?;
            println!(
                "expanded display is {}",
                if state.expanded { "on" } else { "off" }
            );
        }
        Meta::Format if args.is_empty() => println!("format is {}", state.format.name()),
        Meta::Format => {
            let f = Format::parse(args)?;
            if f.is_binary() && state.output.is_none() {
                anyhow::bail!(
                    "{} is binary: send it to a file with \\o FILE first",
                    f.name()
                );
            }
            state.format = f;
        }
        Meta::Output if args.is_empty() => {
            state.output = None;
            if state.format.is_binary() {
                state.format = Format::Table;
            }
            println!("output goes to the terminal");
        }
        Meta::Output => {
            let path = PathBuf::from(args);
            let file = std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            println!("output goes to {}", path.display());
            state.output = Some((path, file, false));
        }
        Meta::Include => {
            let text =
                std::fs::read_to_string(args).with_context(|| format!("cannot read {args}"))?;
            run_text(rt, engine, state, &text);
        }
        Meta::Plot => {
            let mut words: Vec<String> = args.split_whitespace().map(String::from).collect();
            let mut out = None;
            if let Some(i) = words.iter().position(|w| w == "--out") {
                out = words.get(i + 1).map(PathBuf::from);
                words.drain(i..(i + 2).min(words.len()));
            }
            let Some((key, runs)) = words.split_first() else {
                anyhow::bail!("\\plot KEY [RUN…] [--out FILE.svg]");
            };
            print!(
                "{}",
                crate::plot::command(rt, engine, key, runs, out.as_deref())?
            );
        }
        Meta::Help => print!("{}", meta::help()),
        Meta::Edit | Meta::Quit => {}
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Opens `text` in $EDITOR (or $VISUAL, or vi); returns the edited text.
fn edit(text: &str) -> Result<Option<String>> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("\\e needs a terminal");
    }
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let path = std::env::temp_dir().join(format!("runql-{}.sql", std::process::id()));
    std::fs::write(&path, text)?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("cannot start the editor {editor}"))?;
    let edited = std::fs::read_to_string(&path)?;
    let _ = std::fs::remove_file(&path);
    if !status.success() || split::is_blank(&edited) {
        return Ok(None);
    }
    println!("{}", edited.trim());
    Ok(Some(edited))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion() -> Completion {
        Completion {
            words: [
                "metric_summary",
                "metrics",
                "name",
                "optuna.trials",
                "SELECT",
            ]
            .map(String::from)
            .to_vec(),
            values: ["mnist", "val/loss"].map(String::from).to_vec(),
        }
    }

    fn names(c: (usize, Vec<Pair>)) -> (usize, Vec<String>) {
        (c.0, c.1.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn completes_words_dotted_names_and_values_in_quotes() {
        let c = completion();
        assert_eq!(names(c.complete("sel", 3)), (0, vec!["select".to_string()]));
        assert_eq!(
            names(c.complete("FROM metric_", 12)).1,
            vec!["metric_summary"]
        );
        assert_eq!(
            names(c.complete("FROM optuna.t", 13)),
            (5, vec!["optuna.trials".to_string()])
        );
        assert_eq!(
            names(c.complete("SELECT r.na", 11)),
            (9, vec!["name".to_string()])
        );
        assert_eq!(
            names(c.complete("WHERE key = 'val", 16)),
            (13, vec!["val/loss".to_string()])
        );
    }
}
