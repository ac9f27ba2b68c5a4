//! The one-shot commands, run as a user would: the real binary in a child process, over a
//! store made by `runql demo`. Outputs are insta snapshots: review every change as a change
//! users will see.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn runql() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runql"));
    c.env_remove("RUNQL_STORE").env("COLUMNS", "100");
    c
}

/// A demo store in a temp dir.
pub fn demo_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = runql()
        .args(["--store", &dir.path().to_string_lossy(), "demo"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn sql(store: &Path, args: &[&str]) -> Output {
    runql()
        .args(["--store", &store.to_string_lossy(), "sql"])
        .args(args)
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `runql sql --format csv QUERY` over `store`; its output, after checking it succeeded.
pub fn csv(store: &Path, query: &str) -> String {
    stdout(&sql(store, &[query, "--format", "csv"]))
}

const RUNS: &str = "SELECT name, status, parent_run_id IS NULL AS top FROM runs \
                    WHERE project = 'mnist-cnn' AND name IN ('lr-sweep', 'trial-0', 'trial-7') ORDER BY name";

#[test]
fn every_output_format() {
    let dir = demo_store();
    for format in ["table", "csv", "json", "ndjson", "markdown"] {
        let out = stdout(&sql(dir.path(), &[RUNS, "--format", format]));
        insta::assert_snapshot!(format!("format_{format}"), out);
    }
    let file = dir.path().join("out.parquet");
    let out = sql(
        dir.path(),
        &[RUNS, "--format", "parquet", "-o", &file.to_string_lossy()],
    );
    stdout(&out);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
    let out = stdout(&sql(dir.path(), &[RUNS, "--format", "arrow"]));
    assert!(!out.is_empty());
}

#[test]
fn files_with_several_statements_print_each_result() {
    let dir = demo_store();
    let file = dir.path().join("q.sql");
    std::fs::write(
        &file,
        "-- two questions\nSELECT count(*) AS runs FROM runs;\n\
         SELECT project, count(*) AS n FROM runs GROUP BY project ORDER BY project;",
    )
    .unwrap();
    let out = stdout(&sql(
        dir.path(),
        &["-f", &file.to_string_lossy(), "--format", "csv"],
    ));
    insta::assert_snapshot!(out);
}

#[test]
fn errors_are_one_clear_line_and_a_failure_exit() {
    let dir = demo_store();
    let cases = [
        ("unknown_table", "SELECT * FROM nope"),
        ("read_only", "DROP TABLE runs"),
        ("syntax", "SELEC 1"),
    ];
    for (name, q) in cases {
        let out = sql(dir.path(), &[q]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        insta::assert_snapshot!(format!("error_{name}"), err);
    }
    let out = sql(dir.path(), &["SELECT 1", "--format", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = runql()
        .args(["--store", &dir.path().to_string_lossy(), "show", "ffff"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!("error_show_unknown", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let dir = demo_store();
    let mut child = runql()
        .args([
            "--store",
            &dir.path().to_string_lossy(),
            "sql",
            "--format",
            "csv",
        ])
        .arg("SELECT * FROM metrics")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sql_reads_standard_input() {
    let dir = demo_store();
    let mut child = runql()
        .args([
            "--store",
            &dir.path().to_string_lossy(),
            "sql",
            "--format",
            "csv",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT count(DISTINCT project) AS projects FROM runs;")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "projects\n3\n");
}

#[test]
fn runs_show_and_compact() {
    let dir = demo_store();
    let store = dir.path().to_string_lossy().into_owned();
    let out = stdout(
        &runql()
            .args(["--store", &store, "runs", "rl-cartpole", "--format", "csv"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.lines().count(), 3, "{out}");
    let id = out
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let shown = stdout(
        &runql()
            .args(["--store", &store, "show", &id[..12]])
            .output()
            .unwrap(),
    );
    for part in ["Run", "Params", "algo", "ppo", "Metrics", "episode/return"] {
        assert!(shown.contains(part), "{part} missing from:\n{shown}");
    }
    let compacted = stdout(
        &runql()
            .args(["--store", &store, "compact"])
            .output()
            .unwrap(),
    );
    assert!(
        compacted.contains("rl-cartpole: 2 runs compacted"),
        "{compacted}"
    );
    // Still the same answers after compaction.
    let again = stdout(
        &runql()
            .args(["--store", &store, "runs", "rl-cartpole", "--format", "csv"])
            .output()
            .unwrap(),
    );
    assert_eq!(again.lines().count(), 3);
}

#[test]
fn compare_export_and_gc() {
    let dir = demo_store();
    let store = dir.path().to_string_lossy().into_owned();
    let ids = csv(
        dir.path(),
        "SELECT run_id FROM runs WHERE project = 'mnist-cnn' AND name IN ('trial-0', 'trial-3') ORDER BY name",
    );
    let ids: Vec<&str> = ids.lines().skip(1).collect();
    let out = stdout(
        &runql()
            .args([
                "--store", &store, "compare", ids[0], ids[1], "--format", "csv",
            ])
            .output()
            .unwrap(),
    );
    let params: Vec<&str> = out.lines().take(5).collect();
    assert!(params[0].starts_with("param,trial-0 …"), "{out}");
    assert!(params[1].starts_with("batch_size,32,128,≠"), "{out}");
    assert!(params[2].starts_with("lr,0.1,0.03,≠"), "{out}");
    assert!(params[3].starts_with("model,cnn-small,cnn-small,"), "{out}");

    let export = dir.path().join("export");
    stdout(
        &runql()
            .args([
                "--store",
                &store,
                "export",
                &export.to_string_lossy(),
                "-p",
                "rl-cartpole",
                "--format",
                "csv",
            ])
            .output()
            .unwrap(),
    );
    let runs = std::fs::read_to_string(export.join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 3, "{runs}");
    let metrics = std::fs::read_to_string(export.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 1 + 2 * 2 * 150);

    let count = || csv(dir.path(), "SELECT count(*) AS n FROM metrics");
    let before = count();
    let out = stdout(&runql().args(["--store", &store, "gc"]).output().unwrap());
    assert!(out.contains("mnist-cnn: removed"), "{out}");
    assert_eq!(count(), before, "gc changed what queries see");
}

#[test]
fn plot_draws_curves_in_the_terminal_and_to_svg() {
    let dir = demo_store();
    let store = dir.path().to_string_lossy().into_owned();
    let chart = stdout(
        &runql()
            .args(["--store", &store, "plot", "episode/return"])
            .output()
            .unwrap(),
    );
    assert!(chart.starts_with("episode/return\n"), "{chart}");
    assert!(
        chart.contains("[1] ppo-seed") && chart.contains("[2] ppo-seed"),
        "{chart}"
    );
    assert!(
        chart
            .chars()
            .any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "{chart}"
    );
    let svg = dir.path().join("curves.svg");
    stdout(
        &runql()
            .args([
                "--store",
                &store,
                "plot",
                "val/loss",
                "--out",
                &svg.to_string_lossy(),
            ])
            .output()
            .unwrap(),
    );
    let doc = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(
        doc.matches("<polyline").count(),
        5,
        "the 5 latest runs with val/loss"
    );
    let out = runql()
        .args(["--store", &store, "plot", "no-such-key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// docs/guide.md's DuckDB example, run by DuckDB over a demo store, answers what runql
/// answers to the same question.
#[test]
fn duckdb_reads_the_compacted_store_as_documented() {
    let python = std::env::var("RUNQL_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_duckdb = Command::new(&python)
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_duckdb {
        assert!(
            std::env::var_os("RUNQL_REQUIRE_PYTHON").is_none(),
            "{python} cannot import duckdb; scripts/test installs it"
        );
        eprintln!("skipped: no Python with duckdb ({python})");
        return;
    }
    let root = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let guide = std::fs::read_to_string(Path::new(&root).join("../docs/guide.md")).unwrap();
    let example = guide
        .split("<!-- duckdb-example -->\n```sql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/guide.md has a DuckDB example")
        .trim()
        .trim_end_matches(';')
        .to_string();
    let dir = demo_store();
    let store = dir.path().to_string_lossy().into_owned();
    let duck_sql = example.replace("~/.runql", &store);
    let out = Command::new(&python)
        .args([
            "-c",
            "import duckdb, sys\nfor row in duckdb.sql(sys.argv[1]).fetchall():\n    print(','.join(str(v) for v in row))",
            &duck_sql,
        ])
        .output()
        .unwrap();
    let duck = stdout(&out);
    // The same question in runql's SQL: its tables instead of the files.
    let ours = example
        .replace(
            "read_parquet('~/.runql/projects/mnist-cnn/data/metric_summary/*.parquet')",
            "(SELECT * FROM metric_summary WHERE project = 'mnist-cnn')",
        )
        .replace(
            "read_parquet('~/.runql/projects/mnist-cnn/data/params/*.parquet')",
            "(SELECT * FROM params WHERE project = 'mnist-cnn')",
        );
    assert!(!ours.contains("read_parquet"), "{ours}");
    let runql_csv = csv(dir.path(), &ours);
    let runql_rows: Vec<&str> = runql_csv.lines().skip(1).collect();
    assert_eq!(runql_rows.len(), 3, "{runql_csv}");
    assert_eq!(duck.lines().collect::<Vec<_>>(), runql_rows);
}
