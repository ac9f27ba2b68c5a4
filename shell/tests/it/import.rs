//! `runql import mlflow`: a file store written by the real `mlflow` client, read into the
//! store — projects, runs under their MLflow ids, nesting, params, metric histories, tags,
//! artifacts, statuses, deletions — and a second import that writes nothing twice.

use crate::cli::{csv, runql, stdout};

#[test]
fn an_mlflow_file_store_is_imported_once() {
    let Some(python) = crate::mlflow::python() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let mlruns = work.path().join("mlruns");
    let out = std::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/mlflow_file_store.py"
        ))
        .arg(&mlruns)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: serde_json::Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{"))
            .unwrap(),
    )
    .unwrap();
    let id = |k: &str| ids[k].as_str().unwrap().to_string();
    let store = work.path().join("store");
    let import = || {
        let o = runql()
            .args(["--store", &store.to_string_lossy(), "import", "mlflow"])
            .arg(&mlruns)
            .output()
            .unwrap();
        stdout(&o)
    };
    let first = import();
    assert!(first.contains("5 runs (0 already there"), "{first}");
    assert!(first.contains("52 metric points, 1 artifacts"), "{first}");

    let runs = csv(
        &store,
        "SELECT project, name, status, deleted, parent_run_id FROM runs ORDER BY project, name",
    );
    let parent = id("parent");
    assert_eq!(
        runs.trim(),
        format!(
            "project,name,status,deleted,parent_run_id\n\
             old,ancient,finished,true,\n\
             vision sweep,broken,failed,false,\n\
             vision sweep,child,finished,false,{parent}\n\
             vision sweep,gone,finished,true,\n\
             vision sweep,parent,finished,false,"
        )
    );
    // Under their MLflow ids, with the original ids as tags.
    let run_ids = csv(&store, "SELECT run_id FROM runs WHERE name = 'parent'");
    assert!(run_ids.contains(&parent), "{run_ids}");
    let tags = csv(
        &store,
        &format!(
            "SELECT key, value FROM tags WHERE run_id = '{parent}' AND key IN ('stage', 'mlflow.import.run_id') ORDER BY key"
        ),
    );
    assert_eq!(
        tags.trim(),
        format!("key,value\nmlflow.import.run_id,{parent}\nstage,dev")
    );
    let params = csv(
        &store,
        &format!("SELECT key, value FROM params WHERE run_id = '{parent}' ORDER BY key"),
    );
    assert_eq!(params.trim(), "key,value\nlr,0.01\noptimizer,adam");
    let loss = csv(
        &store,
        "SELECT count(*), min(step), max(step), max(value) FROM metrics WHERE key = 'train/loss'",
    );
    assert_eq!(
        loss.trim(),
        "count(*),min(metrics.step),max(metrics.step),max(metrics.value)\n50,0,49,1.0"
    );
    let arts = csv(&store, "SELECT path, size FROM artifacts");
    assert_eq!(arts.trim(), "path,size\ndocs/notes.txt,5");
    let projects = csv(
        &store,
        "SELECT project, deleted, tags LIKE '%\"team\":\"cv\"%' FROM projects ORDER BY project",
    );
    assert!(projects.contains("old,true"), "{projects}");
    assert!(projects.contains("vision sweep,false,true"), "{projects}");

    // Again: everything is there, nothing is written twice.
    let second = import();
    assert!(second.contains("0 runs (5 already there"), "{second}");
    let n = csv(
        &store,
        "SELECT count(*) FROM metrics WHERE key = 'train/loss'",
    );
    assert!(n.contains("\n50"), "{n}");

    // Not a file store: a clear error naming it.
    let o = runql()
        .args(["--store", &store.to_string_lossy(), "import", "mlflow"])
        .arg(work.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nowhere is not a folder"));
}
