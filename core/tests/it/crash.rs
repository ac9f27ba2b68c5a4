//! SIGKILL a logging process at random moments: everything it flushed is read back, nothing
//! else is affected, and the run reads as crashed once its heartbeat is stale.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use rand::Rng;
use runql_core::{RunStatus, Scan, Table};

use crate::child;
use crate::util::{block_on, metric_points, quiet_run, table_rows, temp_store};

#[test]
fn killed_writers_lose_nothing_they_flushed() {
    let (dir, store) = temp_store();
    let url = dir.url().to_string();

    // A finished run that must come through untouched.
    let bystander = quiet_run(&store.project("crash"))
        .name("bystander")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let bystander_id = bystander.id().as_hex();
    for step in 0..1000 {
        bystander
            .log_metric("loss", step, 1.0 / (step as f64 + 1.0))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    bystander.finish().unwrap_or_else(|e| panic!("{e}"));
    let before = table_rows(
        &store,
        Table::Metrics,
        &Scan::project("crash").runs([bystander_id.clone()]),
    );

    let mut rng = rand::rng();
    let mut killed = Vec::new();
    for _ in 0..20 {
        let mut c = child::spawn("crash", &url, &[]);
        let stdout = c.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        let run_id = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| child::after(&l, "run ").map(str::to_string))
            .unwrap_or_else(|| panic!("the child never said which run it logs"));
        let wanted = rng.random_range(1..8);
        let mut flushed: i64 = -1;
        for line in lines.by_ref().take(wanted) {
            let line = line.unwrap_or_default();
            if let Some(n) = child::after(&line, "flushed ") {
                flushed = n.parse().unwrap_or_else(|e| panic!("{e}"));
            }
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..20_000)));
        c.kill().unwrap_or_else(|e| panic!("kill: {e}"));
        let _ = c.wait();
        assert!(flushed >= 0, "the child flushed nothing");
        killed.push((run_id, flushed));
    }

    let reader = store.with_stale_after(Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(400));
    let runs = block_on(reader.list_runs(Some("crash"))).unwrap_or_else(|e| panic!("{e}"));
    for (run_id, flushed) in &killed {
        let record = runs
            .iter()
            .find(|r| &r.run_id == run_id)
            .unwrap_or_else(|| panic!("run {run_id} missing"));
        assert_eq!(record.status, RunStatus::Crashed, "run {run_id}");
        let points = metric_points(&reader, "crash", run_id, "loss");
        // A gap-free prefix 0..=n with n >= what was flushed, each value exactly as logged.
        assert!(
            points.len() as i64 > *flushed,
            "run {run_id}: {} points, flushed up to step {flushed}",
            points.len()
        );
        for (i, (step, bits)) in points.iter().enumerate() {
            assert_eq!(*step, i as i64, "run {run_id}: gap or duplicate at {i}");
            assert_eq!(*bits, (*step as f64).sin().to_bits());
        }
    }
    let bystander_record = runs
        .iter()
        .find(|r| r.run_id == bystander_id)
        .unwrap_or_else(|| panic!("bystander missing"));
    assert_eq!(bystander_record.status, RunStatus::Finished);
    assert_eq!(
        before,
        table_rows(
            &reader,
            Table::Metrics,
            &Scan::project("crash").runs([bystander_id.clone()])
        )
    );

    // The crashed runs compact like any ended run, and read the same afterwards.
    let all_before = table_rows(&reader, Table::Metrics, &Scan::project("crash"));
    let report = block_on(reader.compact("crash")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.runs, 21);
    assert_eq!(
        all_before,
        table_rows(&reader, Table::Metrics, &Scan::project("crash"))
    );
    let after = block_on(reader.list_runs(Some("crash"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        after
            .iter()
            .filter(|r| r.status == RunStatus::Crashed)
            .count(),
        20
    );
}
