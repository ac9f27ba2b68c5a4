//! The parser against files written by the real libraries (plugins/fixtures/rl), with expected
//! values read back by the libraries' own readers (SB3's `load_results`, the wrapper's dicts,
//! pandas for Ray's progress.csv).

use runql_plugin_sdk::arrow_array::Array;
use runql_plugin_sdk::arrow_array::cast::AsArray;
use runql_plugin_sdk::arrow_array::types::{Float64Type, Int64Type};
use runql_plugin_sdk::{Plugin, rows_of, run_native, targets};
use serde_json::Value;

use super::*;

fn fixture(path: &str) -> Vec<u8> {
    let full = format!(
        "{}/../fixtures/rl/{path}",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn expected(file: &str) -> Value {
    serde_json::from_slice(&fixture(file)).expect("expected values are JSON")
}

fn parse(name: &str, bytes: &[u8], chunk: usize) -> Vec<(String, RecordBatch)> {
    let opts = [("episode_metrics".to_string(), "true".to_string())];
    run_native::<Rl>(name, &opts, bytes, chunk).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn monitor_files_match_what_sb3_reads_back() {
    let exp = expected("expected_monitor.json");
    for (dir, files) in [
        ("monitor/single", vec!["monitor.csv"]),
        (
            "monitor/vec",
            vec!["0.monitor.csv", "1.monitor.csv", "2.monitor.csv"],
        ),
    ] {
        let mut total = 0;
        for (i, name) in files.iter().enumerate() {
            let bytes = fixture(&format!("{dir}/{name}"));
            assert_eq!(
                Rl::recognize(name, &bytes[..bytes.len().min(64 << 10)]),
                100
            );
            let file = &exp[dir]["files"][i];
            assert_eq!(file["file"], *name);
            let want = file["rows"].as_array().expect("rows");
            for chunk in [7, 64, 1 << 20] {
                let out = parse(name, &bytes, chunk);
                let ep = rows_of(&out, EPISODES).expect("episodes");
                assert_eq!(ep.num_rows(), want.len(), "{dir}/{name}");
                let r = ep
                    .column_by_name("return")
                    .unwrap()
                    .as_primitive::<Float64Type>();
                let l = ep
                    .column_by_name("length")
                    .unwrap()
                    .as_primitive::<Int64Type>();
                let t = ep
                    .column_by_name("time_s")
                    .unwrap()
                    .as_primitive::<Float64Type>();
                let env = ep.column_by_name("env").unwrap().as_string::<i32>();
                let info = ep.column_by_name("info").unwrap().as_string::<i32>();
                let steps = ep
                    .column_by_name("cumulative_steps")
                    .unwrap()
                    .as_primitive::<Int64Type>();
                let mut cumulative = 0;
                for (k, w) in want.iter().enumerate() {
                    assert_eq!(r.value(k), w["r"].as_f64().unwrap());
                    assert_eq!(l.value(k), w["l"].as_i64().unwrap());
                    assert_eq!(t.value(k), w["t"].as_f64().unwrap());
                    assert_eq!(env.value(k), file["header"]["env_id"].as_str().unwrap());
                    let info: Value = serde_json::from_str(info.value(k)).unwrap();
                    assert_eq!(info["is_success"], w["is_success"]);
                    cumulative += w["l"].as_i64().unwrap();
                    assert_eq!(steps.value(k), cumulative);
                }
                let index = ep
                    .column_by_name("env_index")
                    .unwrap()
                    .as_primitive::<Int64Type>();
                if dir == "monitor/vec" {
                    assert_eq!(index.value(0), i as i64);
                } else {
                    assert!(index.is_null(0));
                }
                let metrics = rows_of(&out, targets::METRICS).expect("metrics");
                // return and length per episode, plus steps/s at the end.
                assert_eq!(metrics.num_rows(), 2 * want.len() + 1);
            }
            total += want.len();
        }
        let loaded = exp[dir]["load_results"]["rows"].as_array().unwrap();
        assert_eq!(
            total,
            loaded.len(),
            "{dir}: as many episodes as load_results"
        );
    }
}

#[test]
fn episode_jsonl_matches_the_wrappers_dicts() {
    let exp = expected("expected_episodes.json");
    for name in ["episodes.jsonl", "episodes_vector.jsonl"] {
        let bytes = fixture(name);
        assert!(Rl::recognize(name, &bytes) >= 90);
        let want = exp[name].as_array().unwrap();
        let out = parse(name, &bytes, 13);
        let ep = rows_of(&out, EPISODES).unwrap();
        assert_eq!(ep.num_rows(), want.len());
        let r = ep
            .column_by_name("return")
            .unwrap()
            .as_primitive::<Float64Type>();
        let steps = ep
            .column_by_name("cumulative_steps")
            .unwrap()
            .as_primitive::<Int64Type>();
        let index = ep
            .column_by_name("env_index")
            .unwrap()
            .as_primitive::<Int64Type>();
        for (k, w) in want.iter().enumerate() {
            assert_eq!(r.value(k), w["r"].as_f64().unwrap());
            assert_eq!(steps.value(k), w["global_step"].as_i64().unwrap());
            match w.get("env").and_then(Value::as_i64) {
                Some(e) => assert_eq!(index.value(k), e),
                None => assert!(index.is_null(k)),
            }
        }
    }
}

#[test]
fn ray_progress_matches_pandas() {
    let exp = expected("expected_ray_tune.json");
    let bytes = fixture("ray_tune/progress.csv");
    assert!(Rl::recognize("progress.csv", &bytes) >= 90);
    let out = parse("progress.csv", &bytes, 100);
    let ep = rows_of(&out, EPISODES).unwrap();
    let rows = exp["progress.csv"]["rows"]
        .as_array()
        .or_else(|| exp["progress"]["rows"].as_array())
        .or_else(|| exp["rows"].as_array())
        .unwrap_or_else(|| panic!("no rows in {}", exp));
    assert_eq!(ep.num_rows(), rows.len());
    let r = ep
        .column_by_name("return")
        .unwrap()
        .as_primitive::<Float64Type>();
    let it = ep
        .column_by_name("episode")
        .unwrap()
        .as_primitive::<Int64Type>();
    for (k, w) in rows.iter().enumerate() {
        assert_eq!(r.value(k), w["episode_reward_mean"].as_f64().unwrap());
        assert_eq!(it.value(k), w["training_iteration"].as_i64().unwrap());
    }
    let metrics = rows_of(&out, targets::METRICS).unwrap();
    let keys = metrics.column_by_name("key").unwrap().as_string::<i32>();
    assert!((0..metrics.num_rows()).any(|i| keys.value(i) == "episode_reward_mean"));
}

#[test]
fn malformed_inputs_say_where() {
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "x.monitor.csv",
            b"#{\"t_start\": 1, \"env_id\": \"E\"}\nr,l,t\n1.0,2,0.1\n1.0,abc,0.2\n",
            "line 4",
        ),
        (
            "x.monitor.csv",
            b"#{\"t_start\": 1, \"env_id\": \"E\"}\nr,l,t\n1.0,2\n",
            "line 3",
        ),
        (
            "x.monitor.csv",
            b"#{\"t_start\": 1, \"env_id\": \"E\"}\n",
            "before the Monitor header",
        ),
        (
            "e.jsonl",
            b"{\"r\": 1, \"l\": 2}\n{\"r\": 1, \"l\"\n",
            "line 2",
        ),
        ("junk.bin", b"\x00\x01\x02\xff\xfe binary", "line 1"),
    ];
    for (name, bytes, want) in cases {
        let err = run_native::<Rl>(name, &[], bytes, 5).unwrap_err();
        assert!(err.contains(want), "{name}: {err}");
    }
    assert_eq!(Rl::recognize("junk.bin", b"\x00\x01\x02"), 0);
}

#[test]
fn by_default_episodes_are_rows_and_steps_per_second_the_only_metric() {
    let bytes = fixture("monitor/single/monitor.csv");
    let out = run_native::<Rl>("monitor.csv", &[], &bytes, 100).unwrap();
    let metrics = rows_of(&out, targets::METRICS).unwrap();
    assert_eq!(metrics.num_rows(), 1);
    let key = metrics.column_by_name("key").unwrap().as_string::<i32>();
    assert_eq!(key.value(0), "rl/steps_per_s");
    let err = run_native::<Rl>("m.csv", &[("bogus".into(), "1".into())], &bytes, 100).unwrap_err();
    assert!(err.contains("unknown option"), "{err}");
}
