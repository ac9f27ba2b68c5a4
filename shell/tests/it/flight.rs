//! `runql serve --flight-port` with the real ADBC Flight SQL driver (adbc-driver-flightsql),
//! pandas and polars. Skipped where they are missing, unless RUNQL_REQUIRE_PG_CLIENTS is set
//! (scripts/test sets it and installs them).

use std::process::Command;

use crate::cli::{csv, demo_store};
use crate::postgres::{READ, have, serve_endpoint};

const SAID: &str = "runql serving Flight SQL on ";

fn python() -> String {
    std::env::var("RUNQL_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn adbc_pandas_and_polars_read_the_store() {
    let python = python();
    if !have(
        &python,
        &["-c", "import adbc_driver_flightsql.dbapi, polars, pandas"],
    ) {
        return;
    }
    let dir = demo_store();
    let server = serve_endpoint(dir.path(), "--flight-port", SAID, &[]);
    let out = Command::new(&python)
        .arg(format!(
            "{}/tests/python/flight_clients.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env(
            "RUNQL_FLIGHT_URI",
            format!("grpc://127.0.0.1:{}", server.port),
        )
        .env("RUNQL_FLIGHT_TOKEN", READ)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();

    // The same answers as the CLI's, with Arrow types.
    let by_project = csv(
        dir.path(),
        "SELECT project, count(*) AS n FROM runs GROUP BY project ORDER BY project",
    );
    let arrow: Vec<String> = got["arrow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{},{}", r["project"].as_str().unwrap(), r["n"]))
        .collect();
    assert_eq!(arrow, by_project.lines().skip(1).collect::<Vec<_>>());
    assert_eq!(
        got["arrow_schema"],
        serde_json::json!(["project:string", "n:int64"])
    );
    let runs: u64 = csv(dir.path(), "SELECT count(*) AS n FROM runs")
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(got["pandas"]["n"][0], runs);
    let mnist: u64 = csv(
        dir.path(),
        "SELECT count(*) AS n FROM runs WHERE project = 'mnist-cnn'",
    )
    .lines()
    .nth(1)
    .unwrap()
    .parse()
    .unwrap();
    assert_eq!(got["param"], mnist);
    let points: u64 = csv(dir.path(), "SELECT count(*) AS n FROM metrics")
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(got["points"], points);

    // Read-only, and no token no answer.
    let write = got["write"].as_str().unwrap();
    assert!(
        write.contains("read-only") && write.contains("CREATE TABLE"),
        "{write}"
    );
    let anonymous = got["anonymous"].as_str().unwrap();
    assert!(anonymous.contains("UNAUTHENTICATED"), "{anonymous}");
    // Basic auth with the token as password.
    assert_eq!(got["basic"], 42);

    // Metadata: catalogs, tables with their columns, table types, server info.
    assert_eq!(got["catalogs"], serde_json::json!(["runql"]));
    for table in ["runs", "metrics", "params", "tags", "metrics_wide"] {
        assert!(
            got["tables"].as_array().unwrap().iter().any(|t| t == table),
            "{table} not listed: {}",
            got["tables"]
        );
    }
    assert_eq!(got["table_types"], serde_json::json!(["TABLE", "VIEW"]));
    let columns = got["runs_columns"].as_array().unwrap();
    assert!(columns.iter().any(|c| c == "run_id") && columns.iter().any(|c| c == "status"));
    assert_eq!(got["info"]["vendor_name"], "runql");
    assert_eq!(got["polars"].as_array().unwrap().len(), 3);
}

#[test]
fn a_hostile_query_is_stopped_by_the_time_limit() {
    let python = python();
    if !have(&python, &["-c", "import adbc_driver_flightsql.dbapi"]) {
        return;
    }
    let dir = demo_store();
    let server = serve_endpoint(dir.path(), "--flight-port", SAID, &["--sql-timeout", "1"]);
    let script = r#"
import os, sys
import adbc_driver_flightsql.dbapi as f
from adbc_driver_flightsql import DatabaseOptions
kw = {DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer " + os.environ["RUNQL_FLIGHT_TOKEN"]}
with f.connect(os.environ["RUNQL_FLIGHT_URI"], db_kwargs=kw, autocommit=True) as conn:
    cur = conn.cursor()
    try:
        cur.execute("SELECT count(*) FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b")
        print("answered", cur.fetchall())
    except Exception as e:
        print("refused", e)
    cur.execute("SELECT 1 AS one")
    print("after", cur.fetchone()[0])
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .env(
            "RUNQL_FLIGHT_URI",
            format!("grpc://127.0.0.1:{}", server.port),
        )
        .env("RUNQL_FLIGHT_TOKEN", READ)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("refused") && text.contains("--sql-timeout"),
        "the cross join was not stopped: {text}"
    );
    // The server goes on answering.
    assert!(text.contains("after 1"), "{text}");
}
