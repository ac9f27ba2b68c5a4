//! Compaction turns live segments into Parquet without changing a single row read, survives
//! being killed at any point, and writes files DuckDB and Polars read without runql.

use std::process::Command;
use std::time::Duration;

use rand::Rng;
use runql_core::{Scan, Store, Table};

use crate::child;
use crate::util::{
    RawObjects, block_on, objects_under, python, python_has, quiet_run, table_rows, temp_store,
};

fn fill(store: &Store, project: &str, runs: usize, points: i64) {
    let p = store.project(project);
    for r in 0..runs {
        let run = quiet_run(&p)
            .name(format!("run-{r}"))
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        run.log_params([("lr", format!("0.{r}")), ("seed", r.to_string())])
            .unwrap_or_else(|e| panic!("{e}"));
        for step in 0..points {
            let noise = ((step * 7919 + r as i64) % 97) as f32 / 970.0;
            run.log_metrics(
                step,
                [
                    (
                        "train/loss",
                        f64::from(2.0f32 / (step as f32 + 1.0) + noise),
                    ),
                    ("val/acc", step as f64 / points as f64),
                ],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        run.set_tag("kind", "fill")
            .unwrap_or_else(|e| panic!("{e}"));
        run.log_line("stdout", format!("run {r} done"))
            .unwrap_or_else(|e| panic!("{e}"));
        run.log_artifact_bytes("out.txt", format!("run {r}"))
            .unwrap_or_else(|e| panic!("{e}"));
        run.finish().unwrap_or_else(|e| panic!("{e}"));
    }
}

fn all_tables(store: &Store, project: &str) -> Vec<Vec<String>> {
    Table::ALL
        .iter()
        .map(|t| table_rows(store, *t, &Scan::project(project)))
        .collect()
}

#[test]
fn compaction_leaves_reads_identical_and_is_idempotent() {
    let (_dir, store) = temp_store();
    fill(&store, "p", 6, 500);
    let before = all_tables(&store, "p");
    // Keep a copy of the live area to stage "crashed after the manifest, before the deletes".
    let live = store.layout().live("p");
    let saved = objects_under(&store, &live);
    assert!(!saved.is_empty());

    let report = block_on(store.compact("p")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.runs, 6);
    assert_eq!(report.rows[&Table::Metrics], 6 * 1000);
    assert!(objects_under(&store, &live).is_empty(), "live area emptied");
    // metric_summary of live data and of compacted data agree.
    assert_eq!(before, all_tables(&store, "p"));

    // Crash after the manifest but before the deletes: the segments come back, readers skip them.
    for (path, bytes) in &saved {
        block_on(store.raw_put(path, bytes.clone())).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(before, all_tables(&store, "p"));
    // Crash before the manifest: an unreferenced Parquet file changes nothing.
    let orphan = store
        .layout()
        .project("p")
        .join("data")
        .join("metrics")
        .join("0000orphan.parquet");
    block_on(store.raw_put(&orphan, bytes::Bytes::from_static(b"PAR1 not really")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(before, all_tables(&store, "p"));

    let again = block_on(store.compact("p")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.runs, 0, "nothing left to compact");
    assert!(again.removed > 0, "leftover segments are cleaned up");
    assert_eq!(before, all_tables(&store, "p"));
}

#[test]
fn a_compaction_killed_at_any_moment_leaves_a_readable_store() {
    let (dir, store) = temp_store();
    let url = dir.url().to_string();
    fill(&store, "big", 12, 4000);
    let before = all_tables(&store, "big");
    let mut rng = rand::rng();
    for attempt in 0..6 {
        let mut c = child::spawn("compact", &url, &[("RUNQL_TEST_PROJECT", "big".into())]);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        let _ = c.kill();
        let _ = c.wait();
        assert_eq!(before, all_tables(&store, "big"), "after kill {attempt}");
    }
    block_on(store.compact("big")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(before, all_tables(&store, "big"));
}

#[test]
fn compacted_parquet_opens_in_duckdb_and_polars() {
    let (dir, store) = temp_store();
    let Some(local) = dir.local() else {
        eprintln!("skipped on an object store: DuckDB and Polars read the local files");
        return;
    };
    fill(&store, "ext", 3, 300);
    block_on(store.compact("ext")).unwrap_or_else(|e| panic!("{e}"));
    let count = |t: Table| -> usize {
        block_on(store.scan(t, &Scan::project("ext")))
            .unwrap_or_default()
            .iter()
            .map(|b| b.num_rows())
            .sum()
    };
    let base = local.join("projects/ext/data");
    let script = r#"
import sys
base, tool = sys.argv[1], sys.argv[2]
tables = ["runs", "params", "tags", "metrics", "logs", "artifacts", "metric_summary"]
for t in tables:
    glob = f"{base}/{t}/*.parquet"
    if tool == "duckdb":
        import duckdb
        n = duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchall()[0][0]
    else:
        import polars as pl
        n = pl.scan_parquet(glob).select(pl.len()).collect().item()
    print(t, n)
"#;
    for tool in ["duckdb", "polars"] {
        if !python_has(tool) {
            continue;
        }
        let out = Command::new(python())
            .args(["-c", script, &base.to_string_lossy(), tool])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            let (name, n) = line.split_once(' ').unwrap_or_else(|| panic!("{line}"));
            let table = Table::from_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(n.parse::<usize>().ok(), Some(count(table)), "{tool} {name}");
        }
    }
}

/// A deleted tag reads as never set: live, compacted, and when the run is resumed after its
/// compaction and the deletion sits in a later file than the value it hides.
#[test]
fn a_deleted_tag_stays_deleted_through_compactions_and_resumes() {
    let (_dir, store) = temp_store();
    let project = store.project("p");
    let tags = |store: &Store| -> Vec<String> {
        let mut rows = table_rows(store, Table::Tags, &Scan::project("p"));
        rows.sort();
        rows
    };
    let has = |rows: &[String], needle: &str| rows.iter().any(|r| r.contains(needle));

    let run = quiet_run(&project).start().unwrap();
    let id = run.id();
    run.set_tag("a", "1").unwrap();
    run.set_tag("b", "2").unwrap();
    run.delete_tag("a").unwrap();
    assert!(run.set_tag("c", runql_core::model::TAG_TOMBSTONE).is_err());
    run.finish().unwrap();
    let live = tags(&store);
    assert!(!has(&live, "|a|") && has(&live, "|b|"), "{live:?}");
    block_on(store.compact("p")).unwrap();
    assert_eq!(live, tags(&store));

    // Resumed after the compaction: `b` (compacted) deleted, `a` set again.
    let again = block_on(project.resume(id)).unwrap().start().unwrap();
    again.delete_tag("b").unwrap();
    again.set_tag("a", "3").unwrap();
    again.finish().unwrap();
    let resumed = tags(&store);
    assert!(has(&resumed, "|3|") && !has(&resumed, "|b|"), "{resumed:?}");
    block_on(store.compact("p")).unwrap();
    assert_eq!(
        resumed,
        tags(&store),
        "the second compaction keeps b deleted"
    );

    let third = block_on(project.resume(id)).unwrap().start().unwrap();
    third.delete_tag("a").unwrap();
    third.finish().unwrap();
    block_on(store.compact("p")).unwrap();
    let last = tags(&store);
    assert!(!has(&last, "|a|") && !has(&last, "|b|"), "{last:?}");
    assert!(
        !last.iter().any(|r| r.contains("runql:deleted")),
        "{last:?}"
    );
}
