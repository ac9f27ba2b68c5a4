//! Event files written by tensorboardX, torch.utils.tensorboard and TensorBoard's own writer
//! (plugins/fixtures/tensorboard), checked against TensorBoard's own reader's answers.

use runql_plugin_sdk::arrow_array::cast::AsArray;
use runql_plugin_sdk::arrow_array::types::{Float64Type, Int64Type};
use runql_plugin_sdk::{Plugin, rows_of, run_native, targets};
use serde_json::Value as Json;

use super::*;

fn dir(run: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "{}/../fixtures/tensorboard/{run}",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    ))
}

fn event_file(run: &str) -> (String, Vec<u8>) {
    let entry = std::fs::read_dir(dir(run))
        .expect("fixture folder")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().contains("tfevents"))
        .expect("an event file");
    let name = entry.file_name().to_string_lossy().into_owned();
    (name, std::fs::read(entry.path()).expect("readable"))
}

fn expected() -> Json {
    let p = dir("expected.json");
    serde_json::from_slice(&std::fs::read(p).expect("expected.json")).expect("json")
}

/// (tag, step, time µs, value) of every metric point.
fn points(out: &[(String, RecordBatch)]) -> Vec<(String, i64, i64, f64)> {
    let Some(m) = rows_of(out, targets::METRICS) else {
        return Vec::new();
    };
    let key = m.column_by_name("key").unwrap().as_string::<i32>();
    let step = m
        .column_by_name("step")
        .unwrap()
        .as_primitive::<Int64Type>();
    let value = m
        .column_by_name("value")
        .unwrap()
        .as_primitive::<Float64Type>();
    let time = m
        .column_by_name("time_us")
        .unwrap()
        .as_primitive::<Int64Type>();
    (0..m.num_rows())
        .map(|i| {
            (
                key.value(i).to_string(),
                step.value(i),
                time.value(i),
                value.value(i),
            )
        })
        .collect()
}

fn check(run: &str, options: &[(String, String)]) {
    let exp = expected();
    let (name, bytes) = event_file(run);
    assert_eq!(Tensorboard::recognize(&name, &bytes), 100);
    let want = exp["runs"][run]["scalars"].as_object().expect("scalars");
    for chunk in [1, 100, 1 << 20] {
        let out = run_native::<Tensorboard>(&name, options, &bytes, chunk).expect(run);
        let got = points(&out);
        for (tag, spec) in want {
            let mine: Vec<_> = got.iter().filter(|p| &p.0 == tag).collect();
            let theirs = spec["points"].as_array().unwrap();
            assert_eq!(mine.len(), theirs.len(), "{run} {tag}");
            for (m, t) in mine.iter().zip(theirs) {
                assert_eq!(m.1, t[0].as_i64().unwrap(), "{run} {tag} step");
                assert_eq!(
                    m.2,
                    (t[1].as_f64().unwrap() * 1e6).round() as i64,
                    "{run} {tag} time"
                );
                assert_eq!(m.3, t[2].as_f64().unwrap(), "{run} {tag} value");
            }
        }
        let tags: std::collections::BTreeSet<_> = got.iter().map(|p| p.0.clone()).collect();
        assert_eq!(
            tags.len(),
            want.len(),
            "{run}: exactly TensorBoard's scalar tags"
        );
        let table = rows_of(&out, TAGS).unwrap();
        let stored = table
            .column_by_name("stored_as")
            .unwrap()
            .as_string::<i32>();
        let tag = table.column_by_name("tag").unwrap().as_string::<i32>();
        for i in 0..table.num_rows() {
            assert_eq!(
                want[tag.value(i)]["on_disk"].as_str().unwrap(),
                stored.value(i),
                "{run} {}",
                tag.value(i)
            );
        }
    }
}

#[test]
fn tensorboardx_files_match_tensorboards_reader() {
    check("tbx", &[]);
}

#[test]
fn torch_tensor_scalars_match_tensorboards_reader() {
    check("torch", &[]);
}

#[test]
fn tensor_content_scalars_match_tensorboards_reader() {
    check("tb_native", &[]);
}

#[test]
fn a_bad_crc_is_an_error_with_its_offset() {
    let (name, bytes) = event_file("corrupt");
    let err = run_native::<Tensorboard>(&name, &[], &bytes, 4096).unwrap_err();
    assert!(err.contains("CRC") && err.contains("at byte"), "{err}");
}

#[test]
fn a_truncated_file_is_an_error_unless_allowed() {
    let (name, bytes) = event_file("truncated");
    let err = run_native::<Tensorboard>(&name, &[], &bytes, 4096).unwrap_err();
    assert!(err.contains("truncated at byte"), "{err}");
    check("truncated", &[("allow_truncated".into(), "true".into())]);
}

#[test]
fn garbage_is_refused() {
    assert_eq!(
        Tensorboard::recognize("x.bin", b"hello world, not tfrecord"),
        0
    );
    let err =
        run_native::<Tensorboard>("x.bin", &[], b"hello world, not a tfrecord", 3).unwrap_err();
    assert!(err.contains("CRC") || err.contains("truncated"), "{err}");
    let err = run_native::<Tensorboard>("x.bin", &[], b"", 3).unwrap_err();
    assert!(err.contains("empty"), "{err}");
}
