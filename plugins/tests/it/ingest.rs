//! Files written by the real libraries, ingested through the first-party plugins into a
//! store, then queried with SQL: the rows land where they belong, once.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use runql_plugins::Ingester;
use runql_query::Engine;

use crate::{fixture, registry, store, test_wasm};

async fn count(engine: &Engine, sql: &str) -> i64 {
    engine.refresh_tables().await.expect("refresh");
    let batches = engine
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_optuna_journal_becomes_tables_and_child_runs_once() {
    let (_dir, store) = store();
    let ingester = Ingester::new(registry(&store));
    let file = fixture("optuna/journal.log");
    let report = ingester
        .ingest(&file, "sweeps", None, None, &[], None)
        .await
        .expect("ingests");
    assert_eq!(report.plugin, "optuna", "recognised without --plugin");
    assert!(!report.already);
    let engine = Engine::new(store.clone()).await.expect("engine");
    let trials = count(&engine, "SELECT count(*) FROM optuna.trials").await;
    assert!(trials > 20, "{trials} trials");
    let waiting = count(
        &engine,
        "SELECT count(*) FROM optuna.trials WHERE state = 'WAITING'",
    )
    .await;
    let children = count(
        &engine,
        &format!(
            "SELECT count(*) FROM runs WHERE parent_run_id = '{}'",
            report.run_id
        ),
    )
    .await;
    assert_eq!(children, trials - waiting, "a child run per trial that ran");
    assert_eq!(report.child_runs as i64, children);
    // Params and objectives on the child runs, joinable to the trials table.
    let with_lr = count(
        &engine,
        "SELECT count(*) FROM params p JOIN runs r USING (project, run_id) \
         WHERE r.name LIKE 'single-objective #%' AND p.key = 'lr'",
    )
    .await;
    assert!(with_lr > 5, "{with_lr}");
    // Each trial row names its child run.
    let joined = count(
        &engine,
        "SELECT count(*) FROM optuna.trials t JOIN runs r ON r.run_id = t.run_key \
         WHERE r.name = t.study_name || ' #' || CAST(t.number AS VARCHAR)",
    )
    .await;
    assert_eq!(joined, children);
    let best = count(
        &engine,
        "SELECT best_trial FROM optuna.studies WHERE study_name = 'single-objective'",
    )
    .await;
    assert_eq!(best, 13, "optuna.load_study(...).best_trial.number");
    // Again: nothing is written twice.
    let again = ingester
        .ingest(&file, "sweeps", None, None, &[], None)
        .await
        .expect("second ingest");
    assert!(again.already);
    assert_eq!(again.run_id, report.run_id);
    assert_eq!(
        count(&engine, "SELECT count(*) FROM optuna.trials").await,
        trials
    );
    assert_eq!(
        count(&engine, "SELECT count(*) FROM runs").await,
        children + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_tensorboard_and_llm_files_land_in_their_tables_and_metrics() {
    let (_dir, store) = store();
    let ingester = Ingester::new(registry(&store));
    let run = ingester
        .ingest(
            &fixture("rl/monitor/single/monitor.csv"),
            "rl",
            None,
            None,
            &[],
            None,
        )
        .await
        .expect("monitor");
    assert_eq!(run.plugin, "rl");
    let tb_dir = fixture("tensorboard/tbx");
    let tb = std::fs::read_dir(&tb_dir)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    // Into the same run as the Monitor file: --run.
    let tb = ingester
        .ingest(&tb, "rl", Some(&run.run_id), None, &[], None)
        .await
        .expect("tensorboard");
    assert_eq!(tb.plugin, "tensorboard");
    assert_eq!(tb.run_id, run.run_id);
    let llm = ingester
        .ingest(
            &fixture("llm/otel_spans.json"),
            "agents",
            None,
            None,
            &[],
            None,
        )
        .await
        .expect("otel");
    assert_eq!(llm.plugin, "llm");
    let engine = Engine::new(store.clone()).await.expect("engine");
    let episodes = count(&engine, "SELECT count(*) FROM rl.episodes").await;
    assert!(episodes >= 40, "{episodes}");
    let returns = count(
        &engine,
        &format!(
            "SELECT count(*) FROM rl.episodes WHERE run_id = '{}' AND \"return\" > 0",
            run.run_id
        ),
    )
    .await;
    assert_eq!(returns, episodes);
    let scalars = count(
        &engine,
        &format!(
            "SELECT count(*) FROM metrics WHERE run_id = '{}' AND key = 'eval/f1'",
            run.run_id
        ),
    )
    .await;
    assert!(scalars > 0);
    let calls = count(
        &engine,
        "SELECT count(*) FROM llm.calls WHERE provider = 'openai'",
    )
    .await;
    assert!(calls >= 5, "{calls}");
    let run_ids = count(
        &engine,
        &format!(
            "SELECT count(*) FROM llm.calls WHERE run_id = '{}'",
            llm.run_id
        ),
    )
    .await;
    assert!(
        run_ids > 0,
        "plugin rows carry the run they were ingested into"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_writes_nothing_and_says_where() {
    let (_dir, store) = store();
    let ingester = Ingester::new(registry(&store));
    let err = ingester
        .ingest(
            &fixture("tensorboard/corrupt/events.out.tfevents.1795793492.fixture-host.0"),
            "p",
            None,
            None,
            &[],
            None,
        )
        .await
        .expect_err("corrupt")
        .to_string();
    assert!(
        err.contains("CRC") && err.contains("at byte") && err.contains("events.out"),
        "{err}"
    );
    let junk = _dir.path().join("junk.bin");
    std::fs::write(&junk, b"\x00\x01\x02\x03 not anything").unwrap();
    let err = ingester
        .ingest(&junk, "p", None, None, &[], None)
        .await
        .expect_err("unrecognised")
        .to_string();
    assert!(err.contains("no installed plugin recognises"), "{err}");
    let err = ingester
        .ingest(&junk, "p", None, Some("rl"), &[], None)
        .await
        .expect_err("forced")
        .to_string();
    assert!(err.contains("junk.bin") && err.contains("line 1"), "{err}");
    let engine = Engine::new(store.clone()).await.expect("engine");
    assert_eq!(
        count(&engine, "SELECT count(*) FROM runs").await,
        0,
        "no run was created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_third_party_plugin_installs_ingests_and_is_removed() {
    let (dir, store) = store();
    let reg = registry(&store);
    let installed = reg
        .install("kvlog.wasm", test_wasm("runql_example_plugin").into())
        .await
        .expect("installs");
    assert_eq!(installed.name, "kvlog");
    assert!(
        reg.list()
            .await
            .unwrap()
            .iter()
            .any(|p| p.name == "kvlog" && !p.builtin)
    );
    let log = dir.path().join("train.kvlog");
    std::fs::write(&log, "step=1 loss=0.9\nstep=2 loss=0.7\n").unwrap();
    let report = Ingester::new(reg.clone())
        .ingest(&log, "p", None, None, &[], None)
        .await
        .expect("ingests");
    assert_eq!(report.plugin, "kvlog");
    let engine = Engine::new(store.clone()).await.expect("engine");
    assert_eq!(count(&engine, "SELECT count(*) FROM kvlog.lines").await, 2);
    assert_eq!(
        count(&engine, "SELECT count(*) FROM metrics WHERE key = 'loss'").await,
        2
    );
    // Refused: a component that imports the filesystem, and a first-party plugin's removal.
    let err = reg
        .install("snoop.wasm", test_wasm("runql_plugin_hostile_fs").into())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wasi:filesystem"), "{err}");
    let err = reg.remove("optuna").await.unwrap_err().to_string();
    assert!(err.contains("ships with runql"), "{err}");
    reg.remove("kvlog").await.expect("removed");
    assert!(!reg.list().await.unwrap().iter().any(|p| p.name == "kvlog"));
}
