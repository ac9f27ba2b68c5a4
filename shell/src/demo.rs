//! `runql demo`: a store with what a team's store looks like after a week — a hyper-parameter
//! sweep with child runs, fine-tuning runs (one crashed, one still running while the shell is
//! open), RL runs, artifacts, inputs, logs and system metrics — and the questions to ask it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use runql_core::model::{RunStatus, now_us};
use runql_core::{Capture, Input, Run, Store};

/// Queries printed (and, without a terminal, run) after the demo store is made.
pub const SUGGESTED: [(&str, &str); 6] = [
    (
        "Runs per project, and how many are running",
        "SELECT project, count(*) AS runs, count(*) FILTER (WHERE status = 'running') AS running\nFROM runs GROUP BY project ORDER BY project;",
    ),
    (
        "The best trial of the learning-rate sweep",
        "SELECT r.name, p.lr, p.batch_size, round(m.\"val/loss\", 4) AS val_loss\nFROM runs r JOIN params_wide p USING (project, run_id) JOIN metrics_wide m USING (project, run_id)\nWHERE r.parent_run_id IS NOT NULL AND r.project = 'mnist-cnn'\nORDER BY val_loss LIMIT 3;",
    ),
    (
        "Learning curves at a glance",
        "SELECT r.name, sparkline(m.step, m.value) AS \"train/loss\"\nFROM metrics m JOIN runs r USING (project, run_id)\nWHERE m.key = 'train/loss' AND r.project = 'mnist-cnn' GROUP BY r.name ORDER BY r.name;",
    ),
    (
        "Runs that are still running or crashed",
        "SELECT project, name, status, heartbeat FROM runs\nWHERE status IN ('running', 'crashed') ORDER BY project, name;",
    ),
    (
        "GPU utilisation per run",
        "SELECT r.name, round(avg(s.value), 1) AS mean_gpu_util, round(max(s.value), 1) AS peak\nFROM system_metrics s JOIN runs r USING (project, run_id)\nWHERE s.key = 'gpu.0.util' GROUP BY r.name ORDER BY mean_gpu_util DESC LIMIT 5;",
    ),
    (
        "Runs whose eval loss diverged",
        "SELECT r.project, r.name, round(s.min, 3) AS best, round(s.last_value, 3) AS last\nFROM metric_summary s JOIN runs r USING (project, run_id)\nWHERE s.key LIKE '%val%loss' AND s.last_value > 1.5 * s.min;",
    ),
];

/// Deterministic noise, so the demo is the same every time.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

/// A run that keeps logging while the demo shell is open.
pub struct DemoLiveRun {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DemoLiveRun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn quiet(store: &Store, project: &str, name: &str) -> runql_core::RunBuilder {
    store
        .project(project)
        .run()
        .name(name)
        .capture(Capture::none())
}

/// Fills `store` (which should be empty) and returns the run that is still running.
pub fn fill(store: &Store) -> Result<DemoLiveRun> {
    let mut noise = Noise(0x5eed_1234);

    // A learning-rate × batch-size sweep, compacted.
    let sweep = quiet(store, "mnist-cnn", "lr-sweep")
        .group("sweep-1")
        .start()?;
    sweep.set_note("Grid over lr and batch size for the small CNN.")?;
    sweep.log_param("grid", "lr x batch_size")?;
    let mut trial = 0;
    for lr in [0.1f64, 0.03, 0.01, 0.003] {
        for batch in [32, 128] {
            let run = sweep
                .child()
                .name(format!("trial-{trial}"))
                .group("sweep-1")
                .capture(Capture::none())
                .start()?;
            trial += 1;
            run.log_params([
                ("lr", lr.to_string()),
                ("batch_size", batch.to_string()),
                ("optimizer", "adam".to_string()),
                ("model", "cnn-small".to_string()),
            ])?;
            run.set_tag("dataset", "mnist")?;
            run.log_input(
                Input::new("mnist-train")
                    .uri("s3://datasets/mnist/train.parquet")
                    .digest("sha256:9a1c…e2")
                    .role("train"),
            )?;
            // Too high a learning rate diverges late; too low converges slowly.
            let speed = (lr * 40.0).min(2.0) * if batch == 32 { 1.2 } else { 1.0 };
            let floor = 0.05 + 0.02 * (batch as f64 / 128.0);
            for step in 0..300 {
                let x = step as f64;
                let mut loss = floor + 2.3 * (-x * speed / 60.0).exp() + 0.02 * noise.next();
                if lr >= 0.1 && step > 200 {
                    loss += (x - 200.0) * 0.004;
                }
                run.log_metric("train/loss", step, loss)?;
                if step % 10 == 0 {
                    run.log_metric("val/loss", step, loss * 1.1 + 0.01 * noise.next())?;
                    run.log_metric("val/acc", step, (1.0 - loss / 2.5).clamp(0.0, 0.995))?;
                }
            }
            for i in 0..6 {
                run.log_system_metric(
                    "gpu.0.util",
                    60.0 + 30.0 * (batch as f64 / 128.0) + 5.0 * noise.next() + i as f64,
                )?;
                run.log_system_metric("gpu.0.mem_used", 2.0e9 + batch as f64 * 1.0e7)?;
            }
            run.log_line("stdout", format!("epoch 3/3 done: train/loss {:.4}", floor))?;
            if lr >= 0.1 {
                run.log_line(
                    "stderr",
                    "warning: loss increased for 100 steps; consider a lower lr",
                )?;
            }
            run.log_artifact_bytes(
                "model/config.json",
                format!("{{\"lr\": {lr}, \"batch_size\": {batch}, \"layers\": [32, 64, 10]}}"),
            )?;
            run.finish()?;
        }
    }
    sweep.finish()?;
    runql_core::block_on(store.compact("mnist-cnn"))?;

    // Fine-tuning runs: two finished, one crashed.
    for (name, lr) in [("lora-r8", 2e-4), ("lora-r16", 1e-4)] {
        let run = quiet(store, "llm-finetune", name).group("lora").start()?;
        run.log_params([
            ("lr", lr.to_string()),
            ("base_model", "tiny-llama-1b".into()),
            ("lora_rank", name[6..].to_string()),
        ])?;
        for step in 0..200 {
            let x = step as f64;
            run.log_metric(
                "train/loss",
                step,
                1.2 + 1.5 * (-x / 50.0).exp() + 0.03 * noise.next(),
            )?;
            if step % 20 == 0 {
                run.log_metric("eval/val_loss", step, 1.3 + 1.4 * (-x / 60.0).exp())?;
            }
        }
        run.log_artifact_bytes(
            "adapter/README.md",
            format!("# {name}\nLoRA adapter, lr {lr}.\n"),
        )?;
        run.finish()?;
    }
    crashed(store)?;

    // Reinforcement learning: episode returns.
    for seed in 0..2 {
        let run = quiet(store, "rl-cartpole", &format!("ppo-seed{seed}")).start()?;
        run.log_params([("algo", "ppo"), ("seed", if seed == 0 { "0" } else { "1" })])?;
        for ep in 0..150 {
            let ret = (500.0 * (1.0 - (-(ep as f64) / 40.0).exp()) + 20.0 * noise.next()).max(8.0);
            run.log_metric("episode/return", ep, ret)?;
            run.log_metric("episode/length", ep, ret.round())?;
        }
        run.finish()?;
    }

    // One run still running: it logs every half second while the demo is open.
    let live = quiet(store, "llm-finetune", "lora-r32 (live)")
        .group("lora")
        .heartbeat_interval(Duration::from_secs(2))
        .start()?;
    live.log_params([
        ("lr", "5e-5"),
        ("base_model", "tiny-llama-1b"),
        ("lora_rank", "32"),
    ])?;
    live.flush()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut step = 0i64;
        let mut n = Noise(7);
        while !flag.load(Ordering::Relaxed) {
            let x = step as f64;
            let _ = live.log_metric(
                "train/loss",
                step,
                1.1 + 1.6 * (-x / 80.0).exp() + 0.03 * n.next(),
            );
            let _ = live.log_system_metric("gpu.0.util", 90.0 + 5.0 * n.next());
            step += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = live.finish_with(RunStatus::Killed);
    });
    Ok(DemoLiveRun {
        stop,
        thread: Some(thread),
    })
}

/// A run whose process died an hour ago: logged, flushed, then silent.
fn crashed(store: &Store) -> Result<()> {
    let run: Run = quiet(store, "llm-finetune", "lora-r64")
        .group("lora")
        .heartbeat_interval(Duration::from_secs(24 * 3600))
        .start()?;
    run.log_params([
        ("lr", "3e-4"),
        ("base_model", "tiny-llama-1b"),
        ("lora_rank", "64"),
    ])?;
    for step in 0..80 {
        run.log_metric(
            "train/loss",
            step,
            1.4 + 1.3 * (-(step as f64) / 50.0).exp(),
        )?;
    }
    run.log_line(
        "stderr",
        "CUDA error: out of memory (tried to allocate 2.00 GiB)",
    )?;
    run.flush()?;
    let id = run.id().to_string();
    // As if the process had been killed: no finish, no more heartbeats…
    std::mem::forget(run);
    // …an hour ago.
    let hour_ago = now_us() - 3_600_000_000;
    let mut record = runql_core::block_on(store.read_run("llm-finetune", &id))?.record;
    record.created = hour_ago - 600_000_000;
    record.started = Some(hour_ago - 600_000_000);
    record.heartbeat = Some(hour_ago);
    runql_core::block_on(store.write_run_record(&record))?;
    if let Some(root) = store.local_root() {
        let dir = root.join("projects/llm-finetune/live").join(&id);
        age(&dir, SystemTime::now() - Duration::from_secs(3600))
            .with_context(|| format!("aging {}", dir.display()))?;
    }
    Ok(())
}

fn age(dir: &Path, when: SystemTime) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            age(&path, when)?;
        } else {
            std::fs::File::options()
                .write(true)
                .open(&path)?
                .set_modified(when)?;
        }
    }
    Ok(())
}
