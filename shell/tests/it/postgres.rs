//! `runql serve --pg-port` with real PostgreSQL clients: psql (Debian's postgresql-client),
//! psycopg 3, SQLAlchemy + pandas, and the PostgreSQL JDBC driver. Skipped where a client is
//! missing, unless RUNQL_REQUIRE_PG_CLIENTS is set (scripts/test sets it and installs them).

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use crate::cli::{csv, demo_store, runql};

pub(crate) const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";

/// `runql serve` with an endpoint beside HTTP and a read and a write token; killed when
/// dropped.
pub(crate) struct EndpointServer {
    child: std::process::Child,
    pub(crate) port: u16,
    _tokens: tempfile::NamedTempFile,
}

impl Drop for EndpointServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `runql serve --port 0 <flag> 0 …` and reads the endpoint's port from the line that
/// starts with `said` (`runql serving Postgres on ADDR …`, `… Flight SQL on grpc://ADDR`).
pub(crate) fn serve_endpoint(
    store: &std::path::Path,
    flag: &str,
    said: &str,
    extra: &[&str],
) -> EndpointServer {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), format!("read {READ}\nwrite {WRITE}\n")).unwrap();
    let mut child = runql()
        .args([
            "--store",
            &store.to_string_lossy(),
            "serve",
            "--port",
            "0",
            flag,
            "0",
        ])
        .args(["--tokens-file", &tokens.path().to_string_lossy()])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let port = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("runql serve did not say `{said}`: {seen:?}");
        };
        if let Some(rest) = line.strip_prefix(said) {
            let addr = rest.split_whitespace().next().unwrap();
            let addr = addr.split_once("://").map_or(addr, |(_, a)| a);
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            break addr.port();
        }
        seen.push(line);
    };
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    EndpointServer {
        child,
        port,
        _tokens: tokens,
    }
}

fn serve(store: &std::path::Path, extra: &[&str]) -> EndpointServer {
    serve_endpoint(store, "--pg-port", "runql serving Postgres on ", extra)
}

/// Whether `program` runs; else skipped (or a failure when the clients are required).
pub(crate) fn have(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("RUNQL_REQUIRE_PG_CLIENTS").is_none(),
            "{program} is missing; scripts/test installs it"
        );
        eprintln!("skipped: no {program}");
    }
    ok
}

fn psql(port: u16, password: &str, commands: &[&str]) -> Output {
    let mut c = Command::new("psql");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "reader",
        "-d",
        "runql",
    ])
    .args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        "VERBOSITY=verbose",
    ])
    .env("PGPASSWORD", password)
    .env("PGCONNECT_TIMEOUT", "10")
    .env_remove("PGSERVICE");
    for command in commands {
        c.args(["-c", command]);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "psql failed:\n{}\n{}",
        text(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o)
}

#[test]
fn psql_reads_the_store_with_a_read_token() {
    if !have("psql", &["--version"]) {
        return;
    }
    let dir = demo_store();
    let server = serve(dir.path(), &[]);
    let port = server.port;

    // The same answer as the CLI's.
    let runs = csv(dir.path(), "SELECT count(*) AS n FROM runs");
    let expected = runs.lines().nth(1).unwrap().to_string();
    assert_eq!(
        ok(psql(port, READ, &["SELECT count(*) FROM runs"])).trim(),
        expected
    );
    // A write token may read too.
    assert_eq!(
        ok(psql(port, WRITE, &["SELECT count(*) FROM runs"])).trim(),
        expected
    );

    // psql's own catalog queries: \d lists the tables, \d runs their columns.
    let listing = ok(psql(port, READ, &["\\d"]));
    for table in ["runs", "metrics", "params"] {
        assert!(
            listing.contains(&format!("|{table}|")),
            "{table} not in \\d:\n{listing}"
        );
    }
    let columns = ok(psql(port, READ, &["\\d runs"]));
    assert!(
        columns.lines().any(|l| l.starts_with("run_id|")),
        "\\d runs:\n{columns}"
    );

    // COPY (query) TO STDOUT, as CSV with a header: what `runql sql --format csv` prints.
    let q = "SELECT project, count(*) AS n FROM runs GROUP BY project ORDER BY project";
    assert_eq!(
        ok(psql(
            port,
            READ,
            &[&format!("COPY ({q}) TO STDOUT WITH (FORMAT csv, HEADER)")]
        )),
        csv(dir.path(), q)
    );

    // Wrong or missing password: refused.
    let refused = psql(port, "not-a-token-at-all", &["SELECT 1"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("password authentication failed"), "{err}");

    // A write: refused with read_only_sql_transaction, for a write token too.
    for token in [READ, WRITE] {
        let write = psql(port, token, &["CREATE TABLE x (a int)"]);
        assert!(!write.status.success());
        let err = String::from_utf8_lossy(&write.stderr);
        assert!(err.contains("25006") && err.contains("read-only"), "{err}");
    }

    // What one connection sets, it alone sees.
    let set = ok(psql(
        port,
        READ,
        &[
            "SET datafusion.execution.batch_size = 77",
            "SHOW datafusion.execution.batch_size",
        ],
    ));
    assert!(set.contains("77"), "{set}");
    let other = ok(psql(port, READ, &["SHOW datafusion.execution.batch_size"]));
    assert!(!other.contains("77") && other.contains("8192"), "{other}");
    let pwned = psql(
        port,
        READ,
        &[
            "SET datafusion.catalog.default_schema = 'pwned'",
            "SELECT count(*) FROM runs",
        ],
    );
    assert!(!pwned.status.success(), "{}", text(&pwned));
    assert_eq!(
        ok(psql(port, READ, &["SELECT count(*) FROM runs"])).trim(),
        expected
    );

    // The server's memory limit is not the client's to lift.
    let lift = psql(
        port,
        READ,
        &["SET datafusion.runtime.memory_limit = '100G'"],
    );
    assert!(!lift.status.success());
    let err = String::from_utf8_lossy(&lift.stderr);
    assert!(
        err.contains("42501") && err.contains("--sql-memory-mb"),
        "{err}"
    );

    // version() reads as Postgres' does (SQLAlchemy parses it).
    assert!(ok(psql(port, READ, &["SELECT version()"])).starts_with("PostgreSQL 16"));
}

#[test]
fn a_hostile_query_is_stopped_by_the_time_limit() {
    if !have("psql", &["--version"]) {
        return;
    }
    let dir = demo_store();
    let server = serve(dir.path(), &["--sql-timeout", "1"]);
    let out = psql(
        server.port,
        READ,
        &[
            "SELECT count(*) FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b",
        ],
    );
    assert!(
        !out.status.success(),
        "the cross join was answered: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("57014") && err.contains("sql-timeout"),
        "{err}"
    );
    // The server goes on answering.
    assert_eq!(ok(psql(server.port, READ, &["SELECT 1"])).trim(), "1");
}

#[test]
fn psycopg_sqlalchemy_and_pandas_read_the_store() {
    let python = std::env::var("RUNQL_PYTHON").unwrap_or_else(|_| "python3".into());
    if !have(&python, &["-c", "import psycopg, sqlalchemy, pandas"]) {
        return;
    }
    let dir = demo_store();
    let server = serve(dir.path(), &[]);
    let out = Command::new(&python)
        .arg(format!(
            "{}/tests/python/pg_clients.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env("RUNQL_PG_PORT", server.port.to_string())
        .env("RUNQL_PG_PASSWORD", READ)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_str(text(&out).lines().last().unwrap()).unwrap();
    let n = |q: &str| -> i64 { csv(dir.path(), q).lines().nth(1).unwrap().parse().unwrap() };
    let mnist = n("SELECT count(*) FROM runs WHERE project = 'mnist-cnn'");
    assert_eq!(
        got["param_query"],
        serde_json::json!([["mnist-cnn", mnist]])
    );
    assert_eq!(got["columns"], serde_json::json!(["project", "n"]));
    assert_eq!(
        got["runs"],
        serde_json::json!(n("SELECT count(*) FROM runs"))
    );
    let per_project = csv(
        dir.path(),
        "SELECT project, count(*) AS n FROM runs GROUP BY project ORDER BY project",
    );
    let rows: Vec<Vec<String>> = per_project
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    assert_eq!(got["copy_rows"], serde_json::json!(rows));
    for t in ["runs", "metrics", "params"] {
        assert!(
            got["tables"].as_array().unwrap().iter().any(|v| v == t),
            "{t} not in {}",
            got["tables"]
        );
        assert!(
            got["sqlalchemy_tables"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == t),
            "{t} not in {}",
            got["sqlalchemy_tables"]
        );
    }
    assert!(
        got["sqlalchemy_run_columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "run_id")
    );
    assert_eq!(
        got["pandas"]["project"],
        serde_json::json!(rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>())
    );
    assert_eq!(got["write"], "25006");
    // Canceled with query_canceled while its rows were being computed; the connection lives.
    assert_eq!(got["cancel"], "57014", "{got}");
    assert_eq!(got["after_cancel"], 1);
}

#[test]
fn the_postgresql_jdbc_driver_reads_the_store() {
    let jar = std::path::Path::new("/usr/share/java/postgresql.jar");
    if !jar.exists() {
        assert!(
            std::env::var_os("RUNQL_REQUIRE_PG_CLIENTS").is_none(),
            "{} is missing (Debian's libpostgresql-jdbc-java); scripts/test installs it",
            jar.display()
        );
        eprintln!("skipped: no PostgreSQL JDBC driver");
        return;
    }
    if !have("javac", &["-version"]) {
        return;
    }
    let classes = tempfile::tempdir().unwrap();
    let src = format!("{}/tests/java/PgJdbc.java", env!("CARGO_MANIFEST_DIR"));
    let built = Command::new("javac")
        .args(["-d", &classes.path().to_string_lossy(), &src])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let dir = demo_store();
    let server = serve(dir.path(), &[]);
    let cp = format!("{}:{}", jar.display(), classes.path().display());
    let out = Command::new("java")
        .args(["-cp", &cp, "PgJdbc", &server.port.to_string(), READ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = text(&out);
    let line = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .to_string()
    };
    for t in ["runs", "metrics", "params"] {
        assert!(line("tables").split(',').any(|x| x == t), "{t}: {out}");
    }
    assert!(
        line("runs_columns").split(',').any(|x| x == "run_id"),
        "{out}"
    );
    let mnist = csv(
        dir.path(),
        "SELECT count(*) AS n FROM runs WHERE project = 'mnist-cnn'",
    );
    assert_eq!(line("mnist_runs"), mnist.lines().nth(1).unwrap());
    assert_eq!(line("write"), "25006");
}
