//! One hostile component per limit, as wasmtime tests its own limits: each misbehaviour is a
//! clear error naming the plugin and the limit, and the next call in the same process works.
//! How long a case takes is bounded by the plugin's own limits (host work on its answers is
//! charged to its CPU budget), not asserted here: timings never go into pass/fail tests.

use std::time::{Duration, Instant};

use runql_plugins::Error;
use runql_plugins::sandbox::{Limits, Loaded, Sandbox};

use crate::test_wasm;

/// The limits for `mode`: a short CPU budget for the endless loop, a generous one otherwise, so
/// that on a loaded machine each hostile mode trips its own limit and not the CPU one.
fn limits(mode: &str) -> Limits {
    Limits {
        memory_bytes: 64 << 20,
        cpu_time: Duration::from_millis(if mode == "loop" { 300 } else { 10_000 }),
        output_bytes: 4 << 20,
    }
}

/// Runs the hostile plugin in `mode` over one chunk, in a fresh session of one loaded
/// component.
fn run(sandbox: &Sandbox, loaded: &Loaded, mode: &str) -> Result<usize, Error> {
    let mut s = loaded.session(
        sandbox,
        &limits(mode),
        "input.bin",
        &[("mode".into(), mode.into())],
    )?;
    let mut n = s.feed(b"some bytes")?.len();
    n += s.finish()?.len();
    Ok(n)
}

#[test]
fn each_limit_is_a_clear_error_and_the_host_keeps_serving() {
    let sandbox = Sandbox::new(None).unwrap();
    let loaded = sandbox
        .load("hostile", &test_wasm("runql_plugin_hostile"))
        .unwrap();
    let cases: [(&str, &[&str]); 5] = [
        ("loop", &["hostile", "CPU time limit"]),
        ("memory", &["hostile", "memory limit"]),
        ("panic", &["hostile", "crashed", "panics on purpose"]),
        ("output", &["hostile", "output size limit"]),
        ("ipc", &["hostile", "not a valid Arrow IPC stream"]),
    ];
    for (mode, words) in cases {
        let err = run(&sandbox, &loaded, mode).expect_err(mode).to_string();
        for w in words {
            assert!(err.contains(w), "{mode}: {err:?} should say {w:?}");
        }
        // The same sandbox, the same component: a well-behaved call succeeds right after.
        assert_eq!(
            run(&sandbox, &loaded, "behave").expect("the next call works"),
            1,
            "after {mode}"
        );
    }
}

#[test]
fn a_component_importing_the_filesystem_is_refused_at_load() {
    let sandbox = Sandbox::new(None).unwrap();
    let err = sandbox
        .load("snoop.wasm", &test_wasm("runql_plugin_hostile_fs"))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("snoop.wasm"), "{err}");
    assert!(err.contains("wasi:filesystem"), "{err}");
    assert!(err.contains("does not grant"), "{err}");
}

#[test]
fn an_unknown_contract_version_is_refused_by_name() {
    let sandbox = Sandbox::new(None).unwrap();
    let err = sandbox
        .load("future.wasm", &test_wasm("runql_plugin_hostile_v2"))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("future.wasm"), "{err}");
    assert!(err.contains("contract version 2.0.0"), "{err}");
    assert!(err.contains("speaks 1.0.0"), "{err}");
}

#[test]
fn garbage_and_core_modules_are_not_plugins() {
    let sandbox = Sandbox::new(None).unwrap();
    let err = sandbox
        .load("junk.wasm", b"\0asm\x01\0\0\0garbage")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("junk.wasm") && err.contains("not a usable runql plugin"),
        "{err}"
    );
    // A plain core module (not a component).
    let core_module = b"\0asm\x01\0\0\0";
    let err = sandbox
        .load("core.wasm", core_module)
        .unwrap_err()
        .to_string();
    assert!(err.contains("core.wasm"), "{err}");
}

#[test]
fn a_compiled_component_is_cached_and_loads_fast_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(Some(dir.path().to_path_buf())).unwrap();
    let wasm = test_wasm("runql_plugin_hostile");
    let cold = Instant::now();
    sandbox.load("hostile", &wasm).unwrap();
    let cold = cold.elapsed();
    let cached: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(cached.len(), 1, "one compiled artifact");
    // A new sandbox (a new process, say) with the same cache folder.
    let again = Sandbox::new(Some(dir.path().to_path_buf())).unwrap();
    let warm = Instant::now();
    again.load("hostile", &wasm).unwrap();
    let warm = warm.elapsed();
    // A ratio in one run, not a timing: loading from the cache skips compilation.
    assert!(warm * 3 < cold, "cached load {warm:?} vs compile {cold:?}");
}
