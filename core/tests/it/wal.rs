//! Acknowledged means durable: a process logging through a write-ahead log, killed with
//! SIGKILL at random moments, loses nothing it acknowledged once the log is recovered, and
//! nothing is written twice — whether the rows reached a segment before the kill or not.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use rand::Rng;

use crate::child;
use crate::util::{block_on, metric_points, temp_store};

#[test]
fn acknowledged_rows_survive_a_kill_exactly_once() {
    let (dir, store) = temp_store();
    let url = dir.url().to_string();
    let wal_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut rng = rand::rng();
    let mut rebuilt = 0;
    for round in 0..6 {
        let mut c = child::spawn(
            "wal",
            &url,
            &[("RUNQL_TEST_WAL", wal_dir.path().display().to_string())],
        );
        // A hung child must fail the test, not hang it: killed after 2 minutes whatever.
        let (done, watchdog) = std::sync::mpsc::channel::<()>();
        let pid = c.id().to_string();
        std::thread::spawn(move || {
            if watchdog.recv_timeout(Duration::from_secs(120)).is_err() {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
            }
        });
        let stdout = c.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        let run_id = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| child::after(&l, "run ").map(str::to_string))
            .unwrap_or_else(|| panic!("the child never said which run it logs"));
        let wanted = rng.random_range(5..200);
        let mut acked: i64 = -1;
        for line in lines.by_ref().take(wanted) {
            let line = line.unwrap_or_default();
            if let Some(n) = child::after(&line, "acked ") {
                acked = n.parse().unwrap_or_else(|e| panic!("{e}"));
            }
        }
        c.kill().unwrap_or_else(|e| panic!("kill: {e}"));
        let _ = c.wait();
        let _ = done.send(());
        assert!(acked >= 0, "round {round}: nothing was acknowledged");

        // The next process finds the dead log, recovers it, and removes it.
        let (wal, dead) = runql_core::Wal::open(wal_dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dead.len(), 1, "round {round}: one dead log");
        let report =
            block_on(runql_core::Wal::recover(&store, &dead)).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.records > 0, "round {round}: {report:?}");
        rebuilt += report.segments;
        assert!(report.acks.len() as i64 >= (acked + 1) / 100, "{report:?}");
        // Recovering again writes nothing (the log is gone; and were it not, nothing is missing).
        let again =
            block_on(runql_core::Wal::recover(&store, &dead)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.segments, 0, "round {round}: {again:?}");
        wal.close().unwrap_or_else(|e| panic!("{e}"));

        let points = metric_points(&store, "wal", &run_id, "loss");
        let steps: HashSet<i64> = points.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            steps.len(),
            points.len(),
            "round {round}: a point was written twice"
        );
        for s in 0..=acked {
            assert!(
                steps.contains(&s),
                "round {round}: acknowledged step {s} lost (acked {acked}, have {})",
                points.len()
            );
        }
        for (s, bits) in &points {
            assert_eq!(*bits, (*s as f64).cos().to_bits());
        }
    }
    // The kills left acknowledged rows that only the log had: recovery wrote them.
    assert!(
        rebuilt > 0,
        "no round needed the log: the test proves nothing"
    );
    let left: Vec<_> = std::fs::read_dir(wal_dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .collect();
    assert!(
        left.is_empty(),
        "recovered and closed logs are removed: {left:?}"
    );
}

#[test]
fn a_segment_a_power_loss_tore_is_written_again_from_the_log() {
    let (_dir, store) = temp_store();
    let Some(root) = store.local_root().map(|r| r.to_path_buf()) else {
        return; // a torn file is a local disk's
    };
    let wal_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (wal, dead) = runql_core::Wal::open(wal_dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(dead.is_empty());
    let run = store
        .project("torn")
        .run()
        .capture(runql_core::Capture::none())
        .wal(wal.clone())
        .owned_elsewhere(Duration::from_secs(600))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let run_id = run.id().to_string();
    let points: Vec<(&str, i64, f64, i64)> = (0..1000)
        .map(|s| ("loss", s, (s as f64).cos(), s))
        .collect();
    let batch = runql_core::Batch {
        metrics: points,
        ..runql_core::Batch::default()
    };
    run.log_batch(&batch, None)
        .unwrap_or_else(|e| panic!("{e}"));
    block_on(run.wait_durable()).unwrap_or_else(|e| panic!("{e}"));
    run.flush().unwrap_or_else(|e| panic!("{e}"));
    // The log as the power loss left it (its records were durable before the segment was
    // written), and the segment torn under its own name.
    let crashed = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for f in std::fs::read_dir(wal_dir.path()).unwrap_or_else(|e| panic!("{e}")) {
        let f = f.unwrap_or_else(|e| panic!("{e}")).path();
        if f.is_file() {
            std::fs::copy(&f, crashed.path().join(f.file_name().unwrap()))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    run.release().unwrap_or_else(|e| panic!("{e}"));
    wal.close().unwrap_or_else(|e| panic!("{e}"));
    let live = root.join("projects/torn/live").join(&run_id);
    let segment = std::fs::read_dir(&live)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "arrow"))
        .unwrap_or_else(|| panic!("no segment in {}", live.display()));
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|f| f.set_len(len / 2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(metric_points(&store, "torn", &run_id, "loss").len() < 1000);

    let (next, dead) = runql_core::Wal::open(crashed.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dead.len(), 1);
    let report =
        block_on(runql_core::Wal::recover(&store, &dead)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.segments, 1, "{report:?}");
    next.close().unwrap_or_else(|e| panic!("{e}"));
    let points = metric_points(&store, "torn", &run_id, "loss");
    assert_eq!(
        points.len(),
        1000,
        "the acknowledged points are whole again"
    );
}
