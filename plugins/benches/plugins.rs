//! The plugin sandbox's cost, measured (figures in docs/benchmarks.md):
//!
//! 1. The same parser (the `rl` plugin's Stable-Baselines3 Monitor reader) on a 1,000,000-row
//!    Monitor CSV, natively and inside the sandbox with the CPU-time limit on (epoch
//!    interruption), in the same run: the ratio native/wasm (goal ≥ 0.7).
//! 2. End-to-end `runql ingest` of that file into a local store (goal ≤ 0.5 s).
//! 3. Loading a plugin whose compiled code is cached on disk, in a fresh sandbox (goal ≤ 5 ms).
//!
//! `cargo bench -p runql-plugins --bench plugins` (ROWS=… to change the file's size).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runql_plugins::registry::BUILTIN;
use runql_plugins::sandbox::{Limits, Sandbox};
use runql_plugins::{Ingester, Registry};

/// A Monitor file as SB3 writes it: header line, column names, one row per episode.
fn monitor_csv(rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * 32);
    out.extend_from_slice(
        b"#{\"t_start\": 1795793472.7289834, \"env_id\": \"CartPole-v1\"}\nr,l,t,is_success\n",
    );
    let mut t = 0.0f64;
    for i in 0..rows {
        let l = 10 + (i * 7919) % 190;
        t += l as f64 * 0.0001;
        let _ = writeln!(
            out,
            "{}.0,{l},{t:.6},{}",
            l,
            if l > 100 { "True" } else { "False" }
        );
    }
    out
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..n {
        let start = Instant::now();
        let v = f();
        best = best.min(start.elapsed());
        last = Some(v);
    }
    (best, last.expect("n > 0"))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1_000_000);
    let csv = monitor_csv(rows);
    println!(
        "input: {rows} episodes, {:.1} MB Monitor CSV",
        csv.len() as f64 / 1e6
    );
    const CHUNK: usize = 1 << 20;

    // 1. Native vs sandboxed, same parser, same chunks.
    let (native, native_rows) = best_of(3, || {
        let out =
            runql_plugin_sdk::run_native::<runql_plugin_rl::Rl>("0.monitor.csv", &[], &csv, CHUNK)
                .expect("native parse");
        out.iter()
            .filter(|(t, _)| t == "episodes")
            .map(|(_, b)| b.num_rows())
            .sum::<usize>()
    });
    // The same, plus the Arrow IPC round trip the sandbox adds (guest encodes, host decodes).
    let (native_ipc, _) = best_of(3, || {
        let mut session =
            <runql_plugin_rl::Rl as runql_plugin_sdk::Plugin>::open("0.monitor.csv", &[])
                .expect("open");
        let mut n = 0;
        let mut round_trip = |out: runql_plugin_sdk::Output| {
            for (_, ipc) in out.encode().expect("encode") {
                let reader =
                    arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
                        .expect("ipc");
                n += reader.map(|b| b.expect("batch").num_rows()).sum::<usize>();
            }
        };
        for c in csv.chunks(CHUNK) {
            let mut out = runql_plugin_sdk::Output::default();
            runql_plugin_sdk::Session::feed(&mut session, c, &mut out).expect("feed");
            round_trip(out);
        }
        let mut out = runql_plugin_sdk::Output::default();
        runql_plugin_sdk::Session::finish(&mut session, &mut out).expect("finish");
        round_trip(out);
        n
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::new(Some(cache.path().to_path_buf())).expect("sandbox");
    let rl = BUILTIN.iter().find(|b| b.name == "rl").expect("rl plugin");
    let loaded = sandbox.load("rl", rl.wasm).expect("loads");
    let limits = Limits::default();
    let (wasm, wasm_rows) = best_of(3, || {
        let mut s = loaded
            .session(&sandbox, &limits, "0.monitor.csv", &[])
            .expect("session");
        let mut n = 0;
        for c in csv.chunks(CHUNK) {
            n += s
                .feed(c)
                .expect("feed")
                .iter()
                .filter(|(t, _)| t == "episodes")
                .map(|(_, b)| b.iter().map(|x| x.num_rows()).sum::<usize>())
                .sum::<usize>();
        }
        n += s
            .finish()
            .expect("finish")
            .iter()
            .filter(|(t, _)| t == "episodes")
            .map(|(_, b)| b.iter().map(|x| x.num_rows()).sum::<usize>())
            .sum::<usize>();
        n
    });
    assert_eq!(native_rows, rows);
    assert_eq!(wasm_rows, rows);
    let ratio = native.as_secs_f64() / wasm.as_secs_f64();
    let fair = native_ipc.as_secs_f64() / wasm.as_secs_f64();
    println!(
        "parse: native {:.0} ms ({:.0} ms with the IPC round trip), sandboxed {:.0} ms → wasm at \
         {ratio:.2}× native, {fair:.2}× native with the same IPC work (goal ≥ 0.7)",
        native.as_secs_f64() * 1e3,
        native_ipc.as_secs_f64() * 1e3,
        wasm.as_secs_f64() * 1e3
    );

    // 2. End to end into a local store (a fresh store each time: ingest writes a file once).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("0.monitor.csv");
    std::fs::write(&file, &csv).expect("write");
    let sandbox = Arc::new(sandbox);
    let mut k = 0;
    let (ingest, report) = best_of(3, || {
        k += 1;
        let store =
            runql_core::Store::open(&dir.path().join(format!("store{k}")).to_string_lossy())
                .expect("store");
        let ingester = Ingester::new(Registry::new(store, sandbox.clone()));
        rt.block_on(ingester.ingest(&file, "bench", None, Some("rl"), &[], None))
            .expect("ingest")
    });
    println!(
        "ingest: {:.0} ms end to end ({} rl.episodes, {} metric points) (goal ≤ 500 ms)",
        ingest.as_secs_f64() * 1e3,
        report.rows.get("rl.episodes").copied().unwrap_or(0),
        report.rows.get("runql.metrics").copied().unwrap_or(0)
    );

    // 3. A cached component in a fresh sandbox (a new process, as far as wasmtime knows).
    let (load, _) = best_of(10, || {
        let fresh = Sandbox::new(Some(cache.path().to_path_buf())).expect("sandbox");
        fresh.load("rl", rl.wasm).expect("cached load");
    });
    println!(
        "cached plugin load: {:.2} ms (goal ≤ 5 ms)",
        load.as_secs_f64() * 1e3
    );
}
