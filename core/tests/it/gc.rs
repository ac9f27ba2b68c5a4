//! `Store::gc` removes only what no reader can see, and reads are unchanged afterwards.

use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use runql_core::{Scan, Table};

use crate::util::{RawObjects, block_on, quiet_run, table_rows, temp_store};

#[test]
fn gc_removes_leftovers_of_crashed_compactions_and_writes_only() {
    let (dir, store) = temp_store();
    let project = store.project("p");
    let run = quiet_run(&project).start().unwrap();
    for step in 0..100 {
        run.log_metric("loss", step, step as f64).unwrap();
    }
    run.finish().unwrap();
    // Keep the live segments to put back after compaction, as if its deletes had not happened.
    let live = store.layout().live("p");
    let segments: Vec<(Path, Bytes)> = block_on(store.raw_list(&live))
        .unwrap()
        .into_iter()
        .map(|m| {
            let bytes = block_on(store.raw_get(&m.location)).unwrap().unwrap();
            (m.location, bytes)
        })
        .collect();
    block_on(store.compact("p")).unwrap();
    for (path, bytes) in &segments {
        block_on(store.raw_put(path, bytes.clone())).unwrap();
    }
    // A compaction that died before its manifest entry, and a torn local write.
    let orphan = store
        .layout()
        .project("p")
        .join("data")
        .join("metrics")
        .join("0000orphan.parquet");
    block_on(store.raw_put(&orphan, Bytes::from_static(b"PAR1 not really PAR1"))).unwrap();
    // (Object stores have no torn writes: a PUT is whole or absent.)
    let temp = dir
        .local()
        .map(|d| d.join("projects/p/manifest/entry.json#12345"));
    if let Some(temp) = &temp {
        std::fs::write(temp, b"half").unwrap();
    }
    let temps = usize::from(temp.is_some());

    let before = table_rows(&store, Table::Metrics, &Scan::project("p"));
    // Within the grace period nothing young is touched but the consumed live objects.
    let kept = block_on(store.gc("p", Duration::from_secs(3600))).unwrap();
    assert_eq!((kept.unreferenced_files, kept.temp_files), (0, 0));
    assert!(kept.live_objects >= segments.len() - 1, "{kept:?}");
    assert!(block_on(store.raw_head(&orphan)).unwrap().is_some());
    assert!(temp.as_ref().is_none_or(|t| t.exists()));

    let report = block_on(store.gc("p", Duration::ZERO)).unwrap();
    assert_eq!(
        (report.unreferenced_files, report.temp_files),
        (1, temps),
        "{report:?}"
    );
    assert!(block_on(store.raw_head(&orphan)).unwrap().is_none());
    assert!(temp.is_none_or(|t| !t.exists()));
    assert!(block_on(store.raw_list(&live)).unwrap().is_empty());
    assert_eq!(
        table_rows(&store, Table::Metrics, &Scan::project("p")),
        before
    );
}
