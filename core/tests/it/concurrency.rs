//! Many processes logging into one local store at once, then compactions racing.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};

use runql_core::{RunStatus, Scan, Table};

use crate::child;
use crate::util::{block_on, rows_per_run, table_rows, temp_store};

#[test]
fn four_processes_by_twenty_five_runs_lose_nothing() {
    let (dir, store) = temp_store();
    let url = dir.url().to_string();
    const POINTS: usize = 1000;
    let children: Vec<_> = (0..4)
        .map(|p| {
            child::spawn(
                "concurrent",
                &url,
                &[
                    ("RUNQL_TEST_RUNS", "25".into()),
                    ("RUNQL_TEST_POINTS", POINTS.to_string()),
                    ("RUNQL_TEST_PROCESS", p.to_string()),
                ],
            )
        })
        .collect();
    let mut ids = BTreeSet::new();
    for mut c in children {
        let out = c.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        for line in BufReader::new(out).lines() {
            if let Some(id) = child::after(&line.unwrap_or_default(), "done ") {
                ids.insert(id.to_string());
            }
        }
        let status = c.wait().unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "child failed: {status}");
    }
    assert_eq!(ids.len(), 100);

    let check = |what: &str| {
        let metrics = block_on(store.scan(Table::Metrics, &Scan::project("concurrency")))
            .unwrap_or_else(|e| panic!("{e}"));
        let per_run = rows_per_run(&metrics);
        assert_eq!(per_run.len(), 100, "{what}");
        assert!(
            per_run.values().all(|n| *n == POINTS),
            "{what}: {per_run:?}"
        );
        let runs = block_on(store.list_runs(Some("concurrency"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(runs.len(), 100, "{what}");
        assert!(
            runs.iter()
                .all(|r| r.status == RunStatus::Finished && ids.contains(&r.run_id)),
            "{what}"
        );
        let params = block_on(store.scan(Table::Params, &Scan::project("concurrency")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows_per_run(&params).len(), 100, "{what}");
    };
    check("live");
    let before = table_rows(&store, Table::Metrics, &Scan::project("concurrency"));

    // Two compactions at once: whichever wins, every row is read exactly once.
    let a = store.clone();
    let b = store.clone();
    let ta = std::thread::spawn(move || block_on(a.compact("concurrency")));
    let tb = std::thread::spawn(move || block_on(b.compact("concurrency")));
    let ra = ta
        .join()
        .unwrap_or_else(|_| panic!("compaction a panicked"));
    let rb = tb
        .join()
        .unwrap_or_else(|_| panic!("compaction b panicked"));
    // A loser may fail when the winner removed segments under it; that is allowed, losing
    // rows is not.
    assert!(
        ra.is_ok() || rb.is_ok(),
        "both compactions failed: {ra:?} {rb:?}"
    );
    check("after racing compactions");
    assert_eq!(
        before,
        table_rows(&store, Table::Metrics, &Scan::project("concurrency"))
    );
    let again = block_on(store.compact("concurrency")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.runs, 0, "compaction is idempotent");
    check("after a third compaction");
}

/// Two hundred runs open at once in one process (two hundred writer threads, no coordinator),
/// logging from several threads while the store is compacted under them: nothing is lost.
#[test]
fn two_hundred_writers_at_once_lose_nothing() {
    let (_dir, store) = temp_store();
    const RUNS: usize = 200;
    const STEPS: i64 = 50;
    let project = store.project("many");
    let runs: Vec<runql_core::Run> = (0..RUNS)
        .map(|i| {
            crate::util::quiet_run(&project)
                .name(format!("w{i:03}"))
                .flush_interval(std::time::Duration::from_millis(20))
                .start()
                .unwrap()
        })
        .collect();
    let ids: BTreeSet<String> = runs.iter().map(|r| r.id().as_hex()).collect();
    std::thread::scope(|s| {
        for part in runs.chunks(RUNS / 8) {
            s.spawn(move || {
                for step in 0..STEPS {
                    for run in part {
                        run.log_metric("loss", step, step as f64).unwrap();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
        }
        // Compactions meanwhile take whatever has ended (nothing yet, then some).
        s.spawn(|| {
            for _ in 0..3 {
                block_on(store.compact("many")).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
        });
    });
    for (i, run) in runs.into_iter().enumerate() {
        run.set_tag("i", i.to_string()).unwrap();
        run.finish().unwrap();
    }
    block_on(store.compact("many")).unwrap();
    let metrics = block_on(store.scan(Table::Metrics, &Scan::project("many"))).unwrap();
    let per_run = rows_per_run(&metrics);
    assert_eq!(
        per_run.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "runs missing"
    );
    assert!(
        per_run.values().all(|n| *n == STEPS as usize),
        "{per_run:?}"
    );
    let listed = block_on(store.list_runs(Some("many"))).unwrap();
    assert_eq!(listed.len(), RUNS);
    assert!(listed.iter().all(|r| r.status == RunStatus::Finished));
}
