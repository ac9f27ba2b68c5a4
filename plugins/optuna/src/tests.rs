//! Journals and CSVs written by Optuna itself (plugins/fixtures/optuna), checked against what
//! `optuna.load_study` reads back from them (expected.json).

use runql_plugin_sdk::arrow_array::Array;
use runql_plugin_sdk::arrow_array::cast::AsArray;
use runql_plugin_sdk::arrow_array::types::{Float64Type, Int64Type};
use runql_plugin_sdk::{Plugin, rows_of, run_native, targets};

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/../fixtures/optuna/{name}",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn expected(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).expect("json")
}

fn replay(name: &str) -> Vec<Study> {
    let bytes = fixture(name);
    let mut r = journal::Replay::default();
    let mut lines = Lines::default();
    lines.feed(&bytes, |n, l| r.apply(n, l)).expect("replays");
    r.studies()
}

fn same_number(ours: f64, theirs: &Value) -> bool {
    match number(theirs) {
        Some(t) if t.is_nan() => ours.is_nan(),
        Some(t) => t == ours,
        None => false,
    }
}

fn check_journal(file: &str, exp_file: &str) {
    let exp = expected(exp_file);
    let studies = replay(file);
    let want = exp["studies"].as_array().unwrap();
    assert_eq!(
        studies.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        want.iter()
            .map(|s| s["study_name"].as_str().unwrap())
            .collect::<Vec<_>>()
    );
    for (s, w) in studies.iter().zip(want) {
        assert_eq!(s.study_id, w["_study_id"].as_i64());
        let dirs: Vec<&str> = w["directions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert_eq!(s.directions, dirs);
        assert_eq!(Value::Object(s.user_attrs.clone()), w["user_attrs"]);
        match w["metric_names"].as_array() {
            Some(names) => assert_eq!(
                Value::from(s.metric_names().unwrap()),
                Value::Array(names.clone())
            ),
            None => assert!(s.metric_names().is_none()),
        }
        let trials = w["trials"].as_array().unwrap();
        assert_eq!(s.trials.len(), trials.len(), "{}", s.name);
        for (t, wt) in s.trials.iter().zip(trials) {
            let ctx = format!("{} #{}", s.name, t.number);
            assert_eq!(t.number, wt["number"].as_i64().unwrap(), "{ctx}");
            assert_eq!(t.trial_id, wt["_trial_id"].as_i64(), "{ctx}");
            assert_eq!(t.state, wt["state"].as_str().unwrap(), "{ctx}");
            match (&t.values, wt["values"].as_array()) {
                (Some(ours), Some(theirs)) => {
                    assert_eq!(ours.len(), theirs.len(), "{ctx}");
                    for (o, th) in ours.iter().zip(theirs) {
                        assert!(same_number(*o, th), "{ctx}: {o} vs {th}");
                    }
                }
                (None, None) => {}
                (o, th) => panic!("{ctx}: values {o:?} vs {th:?}"),
            }
            let params = wt["params"].as_object().unwrap();
            assert_eq!(t.params.len(), params.len(), "{ctx}");
            for (k, v) in params {
                let (ours, dist) = &t.params[k];
                match (ours.as_f64(), v.as_f64()) {
                    (Some(a), Some(b)) => assert_eq!(a, b, "{ctx} {k}"),
                    _ => assert_eq!(ours, v, "{ctx} {k}"),
                }
                assert_eq!(dist.as_ref(), wt["distributions"].get(k), "{ctx} {k}");
            }
            let iv = wt["intermediate_values"].as_object().unwrap();
            assert_eq!(t.intermediate.len(), iv.len(), "{ctx}");
            for (k, v) in iv {
                let step: i64 = k.parse().unwrap();
                assert!(same_number(t.intermediate[&step], v), "{ctx} step {k}");
            }
            assert_eq!(
                Value::Object(t.user_attrs.clone()),
                wt["user_attrs"],
                "{ctx}"
            );
            assert_eq!(
                Value::Object(t.system_attrs.clone()),
                wt["system_attrs"],
                "{ctx}"
            );
            assert_eq!(
                t.start_us,
                wt["datetime_start"].as_str().and_then(parse_datetime),
                "{ctx}"
            );
            assert_eq!(
                t.complete_us,
                wt["datetime_complete"].as_str().and_then(parse_datetime),
                "{ctx}"
            );
        }
        if let Some(best) = w["best_trial"].as_object() {
            let ours = s.best_trial().expect("a best trial");
            assert_eq!(ours.number, best["number"].as_i64().unwrap(), "{}", s.name);
        }
    }
}

#[test]
fn the_journal_replays_like_optuna() {
    check_journal("journal.log", "expected.json");
}

#[test]
fn a_torn_last_line_is_ignored_like_optuna() {
    check_journal("journal_truncated.log", "expected_truncated.json");
}

#[test]
fn trials_become_child_runs_with_params_and_objectives() {
    let bytes = fixture("journal.log");
    assert_eq!(Optuna::recognize("journal.log", &bytes), 100);
    let out = run_native::<Optuna>("journal.log", &[], &bytes, 333).unwrap();
    let exp = expected("expected.json");
    let n_trials: usize = exp["studies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["trials"].as_array().unwrap().len())
        .sum();
    let trials = rows_of(&out, "trials").unwrap();
    assert_eq!(trials.num_rows(), n_trials);
    let runs = rows_of(&out, targets::RUNS).unwrap();
    let waiting = exp["studies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["trials"].as_array().unwrap())
        .filter(|t| t["state"] == "WAITING")
        .count();
    assert_eq!(
        runs.num_rows(),
        n_trials - waiting,
        "every trial that ran is a child run"
    );
    let metrics = rows_of(&out, targets::METRICS).unwrap();
    let keys = metrics.column_by_name("key").unwrap().as_string::<i32>();
    assert!(
        (0..metrics.num_rows()).any(|i| keys.value(i) == "loss"),
        "metric names of the multi-objective study"
    );
    let studies = rows_of(&out, "studies").unwrap();
    let best = studies
        .column_by_name("best_trial")
        .unwrap()
        .as_primitive::<Int64Type>();
    let names = studies
        .column_by_name("study_name")
        .unwrap()
        .as_string::<i32>();
    for i in 0..studies.num_rows() {
        let w = exp["studies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["study_name"] == names.value(i))
            .unwrap();
        match w["best_trial"].get("number").and_then(Value::as_i64) {
            Some(n) => assert_eq!(best.value(i), n),
            None => assert!(best.is_null(i)),
        }
    }
    let iv = rows_of(&out, "intermediate_values").unwrap();
    assert!(
        !iv.column_by_name("value")
            .unwrap()
            .as_primitive::<Float64Type>()
            .is_empty()
    );
}

#[test]
fn trials_dataframe_csv_matches_the_study() {
    let exp = expected("expected.json");
    for (file, study) in [
        ("trials.csv", "single-objective"),
        ("trials_multi.csv", "multi-objective"),
    ] {
        let bytes = fixture(file);
        assert_eq!(Optuna::recognize(file, &bytes), 90);
        let opts = [("study".to_string(), study.to_string())];
        let out = run_native::<Optuna>(file, &opts, &bytes, 50).unwrap();
        let want = exp["studies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["study_name"] == study)
            .unwrap();
        let trials = rows_of(&out, "trials").unwrap();
        let wt = want["trials"].as_array().unwrap();
        assert_eq!(trials.num_rows(), wt.len(), "{file}");
        let state = trials.column_by_name("state").unwrap().as_string::<i32>();
        let value = trials
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Float64Type>();
        for (i, w) in wt.iter().enumerate() {
            assert_eq!(state.value(i), w["state"].as_str().unwrap(), "{file} #{i}");
            match w["values"].as_array() {
                // pandas writes floats to CSV within an ulp or two, not always exactly.
                Some(v) if !value.is_null(i) => {
                    let (a, b) = (value.value(i), number(&v[0]).unwrap());
                    assert!(
                        a == b || (a - b).abs() <= 4.0 * f64::EPSILON * b.abs(),
                        "{file} #{i}: {a} vs {b}"
                    );
                }
                Some(_) => panic!("{file} #{i}: no value in {:?}", trials.slice(i, 1)),
                None => assert!(value.is_null(i), "{file} #{i}"),
            }
        }
    }
}

#[test]
fn malformed_journals_say_which_line() {
    let good = String::from_utf8(fixture("journal.log")).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(3, "{\"op_code\": 4, \"study_id\": ");
    let bad = lines.join("\n") + "\n";
    let err = run_native::<Optuna>("journal.log", &[], bad.as_bytes(), 100).unwrap_err();
    assert!(err.contains("line 4"), "{err}");
    let err = run_native::<Optuna>("x.log", &[], b"\x00\x01garbage\n", 100).unwrap_err();
    assert!(err.contains("line 1"), "{err}");
    assert_eq!(Optuna::recognize("x.bin", b"\x00\x01\x02"), 0);
}
